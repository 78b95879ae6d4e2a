/**
 * An edge's side of the directory: it tells the routers who logged in and
 * out (presence batches, numbered by `seq`), that it is alive (a status every
 * second, with its counters), and on request everything it holds (a snapshot
 * in parts, exactly as of `seq`), all on its own subject c1m.presence.<id>.
 */
import type { LatencyBuckets } from '../router/latency.js';
import type { PresenceObserver } from '../router/registry.js';
import { MIN_WINDOW_MS } from '../server/defaults.js';
import type { Subject } from '../subsmanager/subjects.js';
import type { Bus } from './bus.js';
import { SUBJECTS, type EdgeStats } from './messages.js';

/** Bytes of a snapshot part that are not user ids (the envelope and the stats), generously. */
const SNAPSHOT_OVERHEAD = 4096;
/** A user id in msgpack, at most; a topic's header too. */
const ID_BYTES = 5;

/** A presence entry's bytes in msgpack, at most: a user id, or a topic's text and its header. */
const sizeOf = (subject: Subject): number => (typeof subject === 'number' ? ID_BYTES : subject.length + ID_BYTES);

export class PresenceReporter implements PresenceObserver {
  private seq = 0;
  private ins: Subject[] = [];
  private outs: Subject[] = [];
  /** The pending batch's size, about: topics make entries of up to ~100 bytes, so a storm of logins could outgrow one bus message. */
  private bytes = 0;
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

  login(subject: Subject): void {
    this.ins.push(subject);
    this.pending(subject);
  }

  logout(subject: Subject): void {
    this.outs.push(subject);
    this.pending(subject);
  }

  private pending(subject: Subject): void {
    this.bytes += sizeOf(subject);
    if (this.bytes > this.bus.maxPayload - SNAPSHOT_OVERHEAD) this.flush();
    else this.timer ??= setTimeout(this.flush, this.windowMs);
  }

  /** Sends the pending batch now. */
  readonly flush = (): void => {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.ins.length === 0 && this.outs.length === 0) return;
    this.bus.publish(this.subject, { t: 'presence', boot: this.boot, seq: ++this.seq, in: this.ins, out: this.outs });
    this.ins = [];
    this.outs = [];
    this.bytes = 0;
  };

  /** Alive, with counters: to every router, or to one inbox (the admin command's reply). */
  status(subject: string = this.subject): void {
    this.bus.publish(subject, { t: 'status', boot: this.boot, seq: this.seq, stats: this.stats(), latency: this.latency });
  }

  /**
   * Every stream's user, one entry per stream, and each topic a stream listens to, one entry per stream and topic,
   * to every router (on this edge's subject, where a router can tell who sent it, unlike a reply): pending presence
   * first, so the snapshot is exactly as of `seq`.
   */
  snapshot(subjects: Subject[]): void {
    this.flush();
    const room = this.bus.maxPayload - SNAPSHOT_OVERHEAD;
    const parts: Subject[][] = [[]];
    let bytes = 0;
    for (const subject of subjects) {
      const size = sizeOf(subject);
      if (bytes + size > room && parts[parts.length - 1].length > 0) {
        parts.push([]);
        bytes = 0;
      }
      parts[parts.length - 1].push(subject);
      bytes += size;
    }
    parts.forEach((users, part) => this.bus.publish(this.subject, { t: 'state', boot: this.boot, seq: this.seq, part, last: part === parts.length - 1, users, stats: this.stats() }));
  }

  close(): void {
    this.flush();
  }
}
