/**
 * `c1m cluster`: nats-server, the router(s) and N edges on this host, each a
 * child process, supervised like an OTP one_for_one supervisor: a child that
 * dies is restarted after a backoff that grows while it keeps dying. Their
 * JSON log lines are merged on stdout with `role` and `edge` fields; Ctrl-C or
 * SIGTERM stops everything it started.
 */
import { spawn, type ChildProcess, type SpawnOptionsWithoutStdio } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The built `c1m` command: its children are c1m too. Under vitest this module runs from source, the CLI from dist/. */
export const CLI = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../dist/cli/c1m.js' : '../cli/c1m.js', import.meta.url));

export interface ChildSpec {
  /** Unique name, for logs: nats, router-0, edge-3. */
  name: string;
  role: 'nats' | 'router' | 'edge';
  edge?: string;
  command: string;
  args: string[];
  /** Scheduling niceness (os.setPriority); higher is lower priority. */
  nice?: number;
  /** A log line saying the child is ready; its parsed JSON (or {}) resolves start(). */
  readyWhen: (line: string) => boolean;
}

interface Supervised {
  spec: ChildSpec;
  child?: ChildProcess;
  /** Recent start times, for the backoff. */
  starts: number[];
  restartTimer?: NodeJS.Timeout;
}

/** Writes one merged log line: the child's own JSON with role/edge added, or its plain text wrapped as JSON. */
function emit(spec: ChildSpec, line: string): void {
  let record: Record<string, unknown>;
  try {
    const parsed = JSON.parse(line);
    record = typeof parsed === 'object' && parsed !== null ? parsed : { msg: line };
  } catch {
    record = { level: 30, time: Date.now(), msg: line };
  }
  record.role ??= spec.role;
  if (spec.edge) record.edge ??= spec.edge;
  process.stdout.write(JSON.stringify(record) + '\n');
}

/** The reason in a child's last line: a JSON log record's error or message, or the plain line. */
function reasonIn(line: string): string {
  try {
    const record = JSON.parse(line);
    return String(record.err?.message ?? record.err ?? record.msg ?? line);
  } catch {
    return line;
  }
}

export class Supervisor {
  private readonly children = new Map<string, Supervised>();
  private stopping = false;

  /** Starts a child and resolves with its ready line (as JSON when it is JSON) once it says so. */
  start(spec: ChildSpec, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const entry: Supervised = { spec, starts: [] };
    this.children.set(spec.name, entry);
    return this.run(entry, timeoutMs);
  }

  pids(): Record<string, number | undefined> {
    return Object.fromEntries([...this.children].map(([name, e]) => [name, e.child?.pid]));
  }

  /**
   * Stops every child: edges first (SIGINT: close every stream now), then the
   * routers, then NATS; anything still alive after `graceMs` is killed.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    for (const role of ['edge', 'router', 'nats'] as const) {
      const group = [...this.children.values()].filter((e) => e.spec.role === role);
      for (const e of group) clearTimeout(e.restartTimer);
      await Promise.all(group.map((e) => stopChild(e.child, role === 'nats' ? 'SIGTERM' : 'SIGINT', graceMs)));
    }
  }

  private run(entry: Supervised, timeoutMs: number): Promise<Record<string, unknown>> {
    const { spec } = entry;
    const now = Date.now();
    entry.starts = [...entry.starts.filter((t) => now - t < 60_000), now];
    // stdin stays an open pipe: a c1m child whose supervisor died (even by SIGKILL) sees it end and stops.
    const child = spawn(spec.command, spec.args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, C1M_SUPERVISED: '1' } });
    entry.child = child;
    if (spec.nice && child.pid) {
      try {
        setPriority(child.pid, spec.nice);
      } catch (err) {
        // Raising a priority (nice < 0) needs CAP_SYS_NICE; without it the child runs at the default.
        emit(spec, JSON.stringify({ level: 40, time: Date.now(), msg: `cannot set nice ${spec.nice}: ${(err as Error).message}` }));
      }
    }
    return new Promise((resolve, reject) => {
      let ready = false;
      // Why a child that exits did so: a process says it last (c1m's "c1m: <error>", nats-server's "[FTL] …").
      let lastLine = '';
      const timer = setTimeout(() => {
        if (!ready) reject(new Error(`${spec.name} did not get ready within ${timeoutMs} ms`));
      }, timeoutMs);
      const onLine = (line: string) => {
        if (!line) return;
        lastLine = line;
        emit(spec, line);
        if (!ready && spec.readyWhen(line)) {
          ready = true;
          clearTimeout(timer);
          let parsed: Record<string, unknown> = {};
          try {
            parsed = JSON.parse(line);
          } catch {
            // a plain-text ready line (nats-server) carries nothing to parse
          }
          resolve(parsed);
        }
      };
      createInterface({ input: child.stdout! }).on('line', onLine);
      createInterface({ input: child.stderr! }).on('line', onLine);
      // Not installed or not executable: say so now, not at the ready timeout.
      child.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(Object.assign(new Error(`cannot start ${spec.name} (${spec.command}): ${err.message}`), { code: err.code }));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (this.stopping) return;
        const reason = reasonIn(lastLine);
        if (!ready) reject(new Error(`${spec.name} exited (${signal ?? code}) before it was ready${reason ? `: ${reason}` : ''}`));
        // Backoff: 100 ms after one crash, doubling with each start in the last minute, at most 5 s.
        const delay = Math.min(5000, 100 * 2 ** (entry.starts.length - 1));
        emit(spec, JSON.stringify({ level: 50, time: Date.now(), msg: 'child exited; restarting', code, signal, reason, restartInMs: delay }));
        entry.restartTimer = setTimeout(() => this.run(entry, timeoutMs).catch((err: Error) => emit(spec, JSON.stringify({ level: 50, msg: err.message }))), delay);
      });
    });
  }
}

/** Signals a child and resolves once it has exited; one still running after `graceMs` is killed. */
export function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  return new Promise((resolve) => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill(signal);
  });
}

/**
 * Ports that fetch() refuses to connect to (the Fetch standard's "bad ports")
 * and that an ephemeral range widened to start at 1024, as ./sysctl.conf does,
 * can hand out: an API there would be out of reach of a backend's fetch.
 */
const FETCH_REFUSED_PORTS: ReadonlySet<number> = new Set([1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080]);

/**
 * `count` distinct ports free on `host` right now, for children that must be
 * told their port before they start (SO_REUSEPORT edges share one; a restarted
 * edge gets its own back), none that `refused` names. All are held open at once,
 * so no two are the same and a refused one is not handed out again.
 */
export async function freePorts(host: string, count: number, refused: (port: number) => boolean = (port) => FETCH_REFUSED_PORTS.has(port)): Promise<number[]> {
  const held: net.Server[] = [];
  const ports: number[] = [];
  try {
    // A bounded number of tries: a range made only of refused ports is an error, not a loop.
    for (let tries = 0; ports.length < count; tries++) {
      if (tries > count + 1000) throw new Error(`no ${count} free ports on ${host} outside the ones fetch() refuses`);
      const server = await new Promise<net.Server>((resolve, reject) => {
        const s = net.createServer().once('error', reject);
        s.listen(0, host, () => resolve(s));
      });
      held.push(server);
      const port = (server.address() as net.AddressInfo).port;
      if (!refused(port)) ports.push(port);
    }
    return ports;
  } finally {
    await Promise.all(held.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

export const freePort = async (host: string): Promise<number> => (await freePorts(host, 1))[0];

const MIGRATE_REQ = '/proc/sys/net/ipv4/tcp_migrate_req';

/**
 * Edges close their listener when full. Without tcp_migrate_req the kernel
 * resets the connections waiting in that listener's accept queue; with it, it
 * hands them to another listener on the port. Returns what was done, for the log.
 */
export function ensureMigrateReq(): string {
  try {
    if (readFileSync(MIGRATE_REQ, 'utf8').trim() === '1') return 'net.ipv4.tcp_migrate_req=1 already';
    writeFileSync(MIGRATE_REQ, '1');
    return 'set net.ipv4.tcp_migrate_req=1 (queued connections of a pausing edge move to the others instead of being reset)';
  } catch (err) {
    return `cannot set net.ipv4.tcp_migrate_req=1 (${(err as Error).message}): a full edge pausing may reset connections waiting in its accept queue`;
  }
}

/** The command line that runs `c1m <args>`. */
export const c1mArgv = (args: string[]): string[] => [process.execPath, CLI, ...args];

export const cliCommand = (args: string[]) => ({ command: process.execPath, args: c1mArgv(args).slice(1) });

/** Starts `c1m <args>` as a child process; `cli`: another build's (a benchmark's before). */
export function spawnC1m(args: string[], options: SpawnOptionsWithoutStdio = {}, cli = CLI) {
  return spawn(process.execPath, [cli, ...args], options);
}
