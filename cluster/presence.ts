/**
 * An edge's side of the directory: it tells the routers who logged in and
 * out (presence batches, numbered by `seq`), that it is alive (a status every
 * second, with its counters), and on request everything it holds (a snapshot
 * in parts, exactly as of `seq`), all on its own subject c1m.presence.<id>.
 */
import type { LatencyBuckets } from '../router/latency.js';
import type { PresenceObserver } from '../router/registry.js';
import type { Bus } from './bus.js';
import { MIN_WINDOW_MS, SUBJECTS, type EdgeStats } from './messages.js';

/** Bytes of a snapshot part that are not user ids (the envelope and the stats), generously. */
const SNAPSHOT_OVERHEAD = 4096;
/** A user id in msgpack, at most. */
const ID_BYTES = 5;

export class PresenceReporter implements PresenceObserver {
  private seq = 0;
  private ins: number[] = [];
  private outs: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly subject: string;

  constructor(
    private readonly bus: Bus,
    edge: string,
    /** One run of this edge process: routers forget what an earlier run held. */
    private readonly boot: string,
    private readonly stats: () => EdgeStats,
    private readonly latency: LatencyBuckets,
    /** Presence changes wait this long for others to share their message (ms). */
    private readonly windowMs = MIN_WINDOW_MS,
  ) {
    this.subject = SUBJECTS.presence(edge);
  }

  login(user: number): void {
    this.ins.push(user);
    this.timer ??= setTimeout(this.flush, this.windowMs);
  }

  logout(user: number): void {
    this.outs.push(user);
    this.timer ??= setTimeout(this.flush, this.windowMs);
  }

  /** Sends the pending batch now. */
  readonly flush = (): void => {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.ins.length === 0 && this.outs.length === 0) return;
    this.bus.publish(this.subject, { t: 'presence', boot: this.boot, seq: ++this.seq, in: this.ins, out: this.outs });
    this.ins = [];
    this.outs = [];
  };

  /** Alive, with counters: to every router, or to one inbox (the admin command's reply). */
  status(subject: string = this.subject): void {
    this.bus.publish(subject, { t: 'status', boot: this.boot, seq: this.seq, stats: this.stats(), latency: this.latency });
  }

  /**
   * Every stream's user, one entry per stream, to every router (on this edge's subject, where a router can tell
   * who sent it, unlike a reply): pending presence first, so the snapshot is exactly as of `seq`.
   */
  snapshot(users: number[]): void {
    this.flush();
    const perPart = Math.max(1, Math.floor((this.bus.maxPayload - SNAPSHOT_OVERHEAD) / ID_BYTES));
    const parts = Math.max(1, Math.ceil(users.length / perPart));
    for (let part = 0; part < parts; part++) {
      const slice = users.slice(part * perPart, (part + 1) * perPart);
      this.bus.publish(this.subject, { t: 'state', boot: this.boot, seq: this.seq, part, last: part === parts - 1, users: slice, stats: this.stats() });
    }
  }

  close(): void {
    this.flush();
  }
}
