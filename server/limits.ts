import { closeSync, openSync, readFileSync } from 'node:fs';

/**
 * The soft open-file limit of this process, read at run time: it decides how
 * many sockets one process may hold. Infinity where /proc is not available.
 */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s+/)[3];
    return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
  } catch {
    return Infinity;
  }
}

/**
 * File descriptors not given to streams: listeners, the database, logs, the
 * backend API (SPARE_FDS of them held in reserve by FdGuard), and room for
 * sockets uWS holds before they are streams (requests still arriving, 404s and
 * 503s being answered).
 */
export const RESERVED_FDS = 200;

/** Streams one process may hold: its open-file limit minus the reserve. */
export const streamCapacity = (): number => Math.max(1, openFileLimit() - RESERVED_FDS);

/**
 * The streams at which an edge of `capacity` stops listening: a little before
 * capacity, so that sockets accepted just before the pause still fit. The
 * edges of one port together take new streams up to the sum of these.
 */
export const pausesAt = (capacity: number): number => Math.max(1, capacity - Math.max(1, Math.ceil(capacity * 0.01)));

/** Descriptors FdGuard keeps open on /dev/null, to hand back to the API and the store when the process runs out. */
export const SPARE_FDS = 64;

/** Opens up to n descriptors on /dev/null; fewer when the process runs out. */
function openSpares(n: number): number[] {
  const fds: number[] = [];
  try {
    while (fds.length < n) fds.push(openSync('/dev/null', 'r'));
  } catch {
    // EMFILE/ENFILE: the caller sees fewer than it asked for.
  }
  return fds;
}

/**
 * Keeps the process from running out of file descriptors on its public port.
 * uSockets' accept loop does not back off on EMFILE: once every descriptor is
 * taken (by streams, or by sockets still sending their request, which JS never
 * sees), it retries the readable listener forever at 100% CPU and the API cannot
 * accept either. FdGuard holds SPARE_FDS spare descriptors and checks every
 * `intervalMs` whether the process can still open one more. When it cannot, it
 * calls `pause` (stop accepting on the public port: new connections are
 * refused) and frees the spares for the API and the store; once twice the spares
 * can be opened again, it takes its spares back and calls `resume`.
 */
export class FdGuard {
  paused = false;
  /** Times the process ran out and stopped accepting. */
  exhaustions = 0;
  private spares: number[];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pause: () => void,
    /** Accept again; false if that failed (then the guard tries again later). */
    private readonly resume: () => boolean,
    private readonly intervalMs = 100,
  ) {
    this.spares = openSpares(SPARE_FDS);
    this.watch(true);
  }

  /**
   * Checks only while `needed`: a process that stopped listening for reasons
   * of its own (an edge that is full or draining) cannot run out by accepting,
   * and each check wakes the process (at a million streams, 51 idle edges woke
   * 510 times a second for it). While paused the guard always checks, to resume.
   */
  watch(needed: boolean): void {
    if (needed || this.paused) this.timer ??= setInterval(this.check, this.intervalMs).unref();
    else {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  readonly check = (): void => {
    if (!this.paused) {
      const [probe] = openSpares(1);
      if (probe !== undefined) return closeSync(probe);
      this.paused = true;
      this.exhaustions++;
      this.pause();
      this.spares.splice(0).forEach((fd) => closeSync(fd));
    } else {
      const fds = openSpares(2 * SPARE_FDS);
      if (fds.length < 2 * SPARE_FDS) return fds.forEach((fd) => closeSync(fd));
      fds.splice(SPARE_FDS).forEach((fd) => closeSync(fd));
      // Not paused while resume() runs: an edge asks whether it may listen again.
      this.paused = false;
      if (!this.resume()) {
        this.paused = true;
        return fds.forEach((fd) => closeSync(fd));
      }
      this.spares = fds;
    }
  };

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.spares.splice(0).forEach((fd) => closeSync(fd));
  }
}
