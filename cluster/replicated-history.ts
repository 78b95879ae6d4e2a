/**
 * A partition's history on JetStream (`c1m router --replicas R`): a stream
 * replicated R times over the brain's clustered nats-servers, and the lease
 * in a KV bucket (./kv-lease.ts). Each router's SQLite history file stays its
 * local view (subsmanager/history.ts, `replicated`): replays read it, and it
 * is rebuilt from the stream when missing or of another stream.
 *
 * Ids: a message's id is the stream's epoch (its creation time in µs, kept in
 * its description) plus its sequence, so a token from a deleted stream never reads as one of the new
 * stream's ids.
 *
 * Fencing: the leader publishes every message expecting the stream's last
 * sequence to be the one before its own (`Nats-Expected-Last-Sequence`). A
 * router taking the partition first catches its view up to the stream's last
 * sequence, then publishes a term marker (a header, no body; replays never see
 * it) expecting that sequence. A deposed leader (frozen, cut off) then has
 * every later publish refused: it numbers nothing after its successor, and
 * exits. The commit point is the stream's acknowledgement (a quorum of R):
 * deliveries and answers wait for it (afterCommit), and the view writes only
 * acknowledged rows, so a message the stream refused is never shown with an
 * id another may give.
 *
 * Followers keep their view current from the stream (an ordered consumer from
 * the view's last id), so taking a partition over reads only the tail.
 *
 * Idempotency keys: the leader's view holds every keyed message of the window
 * (its own, and what it read before its term marker), so a retry is answered
 * from it without a publish. A keyed publish also carries `Nats-Msg-Id`
 * (`<subject> <key>`), and the stream's duplicate window is the history's: a
 * key the view no longer knows but the stream does (its window ended a moment
 * earlier) is acknowledged as a duplicate with the first send's sequence,
 * storing nothing: the view remembers the key as that id again, and the
 * leader steps down, delivering nothing it numbered since; the backend's
 * retry is answered with the first id. On nats-server 2.9.10 a duplicate wins over a
 * wrong expected sequence (tested): a deposed leader's duplicate is told
 * duplicate, not refused.
 */
import { DeliverPolicy, DiscardPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, type StreamInfo } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { Empty, headers, nanos, type NatsConnection } from '@nats-io/transport-node';
import { NotSequencerError, subjectKey, type History, type HistoryStats, type MessageHistory, type Missed, type Replay, type Row } from '../subsmanager/history.js';
import { errorCode } from '../subsmanager/errors.js';
import { LEASE, type Term } from '../subsmanager/sequencer.js';
import type { Subject } from '../subsmanager/subjects.js';
import { isStale, KvLease, LEASE_BUCKET, leaseKey } from './kv-lease.js';
import { BRAIN_SUBJECTS } from './nats-auth.js';

/** The header naming a message's subject (a user's digits or a topic's `kind:id`), and the one that marks a term's start. */
const SUBJECT_HEADER = 'C1M-Subject';
const TERM_HEADER = 'C1M-Term';
/** The stream keeps messages this long beyond the history's window: the views prune by the window. */
const STREAM_MARGIN_SECONDS = 60;
/** A publish not acknowledged by then fails: the leader cannot know what the stream holds, and steps down. */
const PUBLISH_TIMEOUT_MS = 5000;
const DIGITS = /^[0-9]+$/;
/** A subject as its header carries it: a user's digits, or a topic's `kind:id`. */
const subjectOfHeader = (text: string): Subject => (DIGITS.test(text) ? Number(text) : text);
/** Reading the stream's tail up to a given sequence gives up after this long (taking a partition, opening a view). */
const CATCH_UP_TIMEOUT_MS = 10_000;
/** A follower whose consumer could not be made tries again this much later. */
const FOLLOW_RETRY_MS = 1000;

export const historyStream = (partition: number, partitions: number): string => `C1M_HISTORY_${partition}_OF_${partitions}`;
export const historySubject = (partition: number, partitions: number): string => `${BRAIN_SUBJECTS}.history.${partitions}.${partition}`;

/**
 * A stream's epoch, kept in its description when it is made (its creation time in µs): part of the configuration,
 * which every server holds alike. Not the `created` of its info: each replica has its own, and ids would shift by
 * milliseconds when the stream's leader moves.
 */
const describe = (epoch: number): string => `c1m message history, epoch ${epoch}`;
const EPOCH = /^c1m message history, epoch (\d+)$/;
function streamEpoch(info: StreamInfo): number {
  const epoch = EPOCH.exec(info.config.description ?? '')?.[1];
  if (epoch === undefined) throw new Error(`JetStream stream ${info.config.name} is not a c1m message history (its description names no epoch)`);
  return Number(epoch);
}

export interface BrainOptions {
  replicas: number;
  partitions: number;
  historySeconds: number;
}

/**
 * A router's partitions' streams and the leases' bucket, over its JetStream connection (./jetstream.ts, shared with
 * the replicated store; the bus, ./nats-bus.ts, carries everything else).
 */
export class Brain {
  private constructor(
    readonly nc: NatsConnection,
    readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
    readonly kvm: Kvm,
    readonly options: BrainOptions,
  ) {}

  static async on(nc: NatsConnection, o: BrainOptions): Promise<Brain> {
    try {
      const jsm = await untilElected(() => jetstreamManager(nc, { timeout: PUBLISH_TIMEOUT_MS }));
      return new Brain(nc, jetstream(nc, { timeout: PUBLISH_TIMEOUT_MS }), jsm, new Kvm(nc), o);
    } catch (err) {
      throw new Error(`JetStream: ${(err as Error).message} (--replicas needs nats-servers with JetStream)`);
    }
  }

  /** The partition's stream, made if missing; one of another replica count or subjects is refused, saying so. */
  stream(partition: number): Promise<StreamInfo> {
    return untilElected(() => this.openStream(partition));
  }

  private async openStream(partition: number): Promise<StreamInfo> {
    const { partitions, replicas, historySeconds } = this.options;
    const name = historyStream(partition, partitions);
    const subject = historySubject(partition, partitions);
    let info: StreamInfo;
    try {
      info = await this.jsm.streams.info(name);
    } catch (err) {
      if (!/stream not found/i.test((err as Error).message)) throw err;
      info = await this.jsm.streams.add({
        name,
        subjects: [subject],
        num_replicas: replicas,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.Old,
        max_age: nanos((historySeconds + STREAM_MARGIN_SECONDS) * 1000),
        duplicate_window: nanos(historySeconds * 1000),
        description: describe(Date.now() * 1000),
      });
    }
    // A stream made before keys (JetStream's default window, 2 min) or under another --history-seconds: the keys' window is the history's.
    if (info.config.duplicate_window !== nanos(historySeconds * 1000)) info = await this.jsm.streams.update(name, { duplicate_window: nanos(historySeconds * 1000) });
    const { num_replicas, subjects } = info.config;
    if (num_replicas !== replicas || subjects?.length !== 1 || subjects[0] !== subject) {
      throw new Error(`JetStream stream ${name} has ${num_replicas} replicas and subjects ${JSON.stringify(subjects)}, not ${replicas} and ["${subject}"]: a cluster's routers must agree on --replicas and --partitions (delete the stream to change them)`);
    }
    return info;
  }

  private bucket?: Promise<KV>;

  /** The bucket of the partitions' leases, made if missing, checked as the streams are. */
  leases(): Promise<KV> {
    this.bucket ??= untilElected(async () => {
      const { replicas } = this.options;
      const kv = await this.kvm.create(LEASE_BUCKET, { replicas, history: 1 });
      const status = await kv.status();
      if (status.replicas !== replicas) throw new Error(`JetStream KV bucket ${LEASE_BUCKET} has ${status.replicas} replicas, not ${replicas}: a cluster's routers must agree on --replicas`);
      return kv;
    });
    return this.bucket;
  }

}

/** How long a router waits at its start for the brain's servers to elect their JetStream leader (about 0.5 s after they start). */
const ELECTION_MS = 15_000;

/**
 * Runs `step` again while JetStream is not ready yet: no leader elected (its API unavailable or silent), or a stream
 * that another router of the cluster is making this moment (not found, then already there).
 */
async function untilElected<T>(step: () => Promise<T>): Promise<T> {
  const deadline = performance.now() + ELECTION_MS;
  for (;;) {
    try {
      return await step();
    } catch (err) {
      const notYet = /temporarily unavailable|no responders|timeout|no suitable peers|insufficient resources|stream not found|already in use/i.test((err as Error).message);
      if (!notYet || performance.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/** Runs once the stream holds every message numbered up to `id`, or fails. */
interface Waiting {
  id: number;
  done: () => void;
  failed?: () => void;
}

export class ReplicatedHistory implements MessageHistory {
  readonly lease: KvLease;
  /** The highest id the stream has acknowledged (leading), or the view holds. */
  private acked: number;
  private readonly waiting: Waiting[] = [];
  private leading = false;
  private following?: ConsumerMessages;
  /** The consumer whose messages the view takes now (see follow): each new one, and each stop, counts one more. */
  private reader = 0;
  /** Rows read from the stream, written to the view at the end of the turn, and the last id read (a marker's maybe). */
  private incoming: Row[] = [];
  private incomingThrough = 0;
  private applyScheduled = false;
  /** The stream's last sequence, as last heard. */
  private streamLast: number;
  private renewTimer?: NodeJS.Timeout;
  private renewing = false;
  private failing = false;
  private closed = false;
  private readonly subject: string;
  private readonly name: string;
  /** Called once this router may no longer number the partition (refused or failed publish, lease taken): the router exits. */
  onLeaseLost: (why: string) => void = (why) => {
    throw new Error(why);
  };
  /** Called once this router stopped leading the partition by itself (see fail): its directory stops taking its sends. */
  onStepDown: (why: string) => void = () => {};
  /** Each leadership's number: an acknowledgement or failure of an earlier one's publish changes nothing. */
  private run = 0;

  private constructor(
    private readonly brain: Brain,
    readonly view: History,
    readonly partition: number,
    private readonly epoch: number,
    streamLast: number,
    kv: KV,
  ) {
    const { partitions } = brain.options;
    this.subject = historySubject(partition, partitions);
    this.name = historyStream(partition, partitions);
    this.streamLast = streamLast;
    this.acked = view.lastId;
    this.lease = new KvLease(kv, leaseKey(partition, partitions), () => this.view.lastId);
  }

  /** Opens partition p's stream (made if missing) and brings the view up to it before returning; then follows it. */
  static async open(brain: Brain, view: History, partition: number): Promise<ReplicatedHistory> {
    const [info, kv] = await Promise.all([brain.stream(partition), brain.leases()]);
    const epoch = streamEpoch(info);
    view.follow(epoch, epoch + Math.max(info.state.first_seq - 1, 0));
    const history = new ReplicatedHistory(brain, view, partition, epoch, info.state.last_seq, kv);
    await history.catchUp(info.state.last_seq);
    history.follow();
    return history;
  }

  get lastId(): number {
    return this.view.lastId;
  }

  replay(user: number, after: number, budget?: number, topics?: readonly string[]): Replay {
    return this.view.replay(user, after, budget, topics);
  }

  newerThan(id: number): Missed[] {
    return this.view.newerThan(id);
  }

  keyed(subject: Subject, key: string): number | undefined {
    return this.view.keyed(subject, key);
  }

  stats(): HistoryStats & { replicas: number; streamLast: number; lag: number } {
    const through = this.leading ? this.acked : (this.view.place()?.through ?? this.epoch);
    return { ...this.view.stats(), term: this.lease.term ?? null, replicas: this.brain.options.replicas, streamLast: this.streamLast, lag: Math.max(0, this.streamLast - (through - this.epoch)) };
  }

  /** Numbers a message and publishes it, pipelined: its acknowledgement is awaited by afterCommit. Only while leading. */
  append(subject: Subject, body: Uint8Array, key?: string): number {
    if (!this.leading || !this.lease.holds()) throw new NotSequencerError();
    const id = this.view.append(subject, body, key);
    const marks = headers();
    marks.set(SUBJECT_HEADER, String(subject));
    const run = this.run;
    const msgID = key === undefined ? undefined : subjectKey(subject, key);
    this.brain.js.publish(this.subject, body, { expect: { lastSequence: id - 1 - this.epoch }, headers: marks, msgID, timeout: PUBLISH_TIMEOUT_MS }).then(
      (ack) => {
        if (run !== this.run) return;
        if (ack.duplicate) {
          // Stored nothing: what this leader numbered after it expects a sequence the stream never reaches, and none of it is
          // delivered. The stream's sequence is the first send's id: the backend's retry is answered with it.
          this.remember(subject, key!, this.epoch + ack.seq);
          return this.fail(false, `the stream already holds ${msgID} as sequence ${ack.seq} (its key's window outlasted this view's)`);
        }
        if (ack.seq === id - this.epoch) this.acknowledged(id);
        else this.fail(true, `the stream numbered ${ack.seq}, not ${id - this.epoch}`);
      },
      (err: Error) => run === this.run && this.fail(isStale(err), `a publish of partition ${this.partition} failed: ${err.message}`),
    );
    return id;
  }

  private remember(subject: Subject, key: string, id: number): void {
    try {
      this.view.rememberKey(subject, key, id);
    } catch (err) {
      // SQLITE_BUSY (an operator's sqlite3 holding the file's write lock): the retry is a duplicate to the stream once more.
      if (errorCode(err) !== 'SQLITE_BUSY') throw err;
    }
  }

  afterCommit(done: () => void, failed?: () => void): void {
    if (this.failing) return failed?.();
    if (!this.leading || this.view.lastId <= this.acked) return done();
    this.waiting.push({ id: this.view.lastId, done, failed });
  }

  private acknowledged(id: number): void {
    if (id <= this.acked) return;
    this.acked = id;
    this.streamLast = Math.max(this.streamLast, id - this.epoch);
    this.view.committed(id);
    let n = 0;
    while (n < this.waiting.length && this.waiting[n].id <= id) this.waiting[n++].done();
    this.waiting.splice(0, n);
  }

  /**
   * A publish failed: what waits for its acknowledgement is answered as failed and never delivered. Refused for its
   * expected sequence (`deposed`: another router numbered after this one), or the lease taken: this router exits.
   * Not acknowledged (no stream leader while the servers elect one, a timeout): it steps down and follows again; its
   * unacknowledged messages are forgotten (the stream may hold one that timed out: followers read it from there),
   * and the partition goes to whichever router next catches up and publishes its term marker.
   */
  private fail(deposed: boolean, why: string): void {
    if (this.failing || !this.leading) return;
    this.leading = false;
    this.run++;
    clearInterval(this.renewTimer);
    for (const waiting of this.waiting.splice(0)) waiting.failed?.();
    if (deposed) {
      this.failing = true;
      return this.onLeaseLost(why);
    }
    this.view.numberAfter(undefined);
    void this.lease.handOver();
    this.follow();
    this.onStepDown(why);
  }

  /**
   * Takes the partition if its lease is free: catches the view up to the stream's last message, then publishes a
   * term marker expecting it, so that nothing the previous leader might still publish can follow. Undefined while
   * another router holds the lease, or when the marker was refused (the lease is handed back, and tried again later).
   */
  async claimLease(): Promise<Term | undefined> {
    if (this.leading || this.failing) return undefined;
    const term = await this.lease.claim();
    if (!term) return undefined;
    try {
      this.stopFollowing();
      const info = await this.brain.jsm.streams.info(this.name);
      await this.catchUp(info.state.last_seq);
      const marks = headers();
      marks.set(TERM_HEADER, String(term.term));
      const ack = await this.brain.js.publish(this.subject, Empty, { expect: { lastSequence: info.state.last_seq }, headers: marks, timeout: PUBLISH_TIMEOUT_MS });
      this.acked = this.epoch + ack.seq;
      this.streamLast = ack.seq;
      this.view.numberAfter(this.acked);
    } catch (err) {
      await this.lease.handOver();
      this.follow();
      throw err;
    }
    this.leading = true;
    this.run++;
    this.renewTimer = setInterval(() => void this.renew(), LEASE.renewMs);
    return term;
  }

  private async renew(): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    try {
      if ((await this.lease.renew()) === 'lost') this.fail(true, `another router took partition ${this.partition}'s lease`);
    } finally {
      this.renewing = false;
    }
  }

  /** Hands the partition over (see History.handOver): false while messages wait for the stream's acknowledgement. */
  handOver(): boolean {
    if (!this.leading || this.waiting.length > 0 || this.view.lastId > this.acked) return false;
    this.leading = false;
    this.run++;
    clearInterval(this.renewTimer);
    this.view.numberAfter(undefined);
    void this.lease.handOver();
    this.follow();
    return true;
  }

  /** Resolves once what is numbered so far is acknowledged, or failed, or after the publish timeout. */
  settled(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, PUBLISH_TIMEOUT_MS);
      const done = () => (clearTimeout(timer), resolve());
      this.afterCommit(done, done);
    });
  }

  /** Waits for what is numbered to be acknowledged, gives the lease back, stops following. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.renewTimer);
    if (this.leading && !this.failing) {
      await this.settled();
      this.leading = false;
      this.view.flush();
      await this.lease.release();
    }
    this.stopFollowing();
  }

  /** Reads the stream after the view's last id until `last` (a sequence), writing it to the view. */
  private async catchUp(last: number): Promise<void> {
    if (this.viewSeq() >= last) return;
    const mine = ++this.reader;
    const consumer = await this.brain.js.consumers.get(this.name, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: this.viewSeq() + 1 });
    let reached!: () => void;
    let timer: NodeJS.Timeout | undefined;
    const caughtUp = new Promise<void>((resolve, reject) => {
      reached = resolve;
      // JetStream away or electing: the caller tries again later rather than waiting for ever.
      timer = setTimeout(() => reject(new Error(`${this.name}: not caught up to ${last} within ${CATCH_UP_TIMEOUT_MS} ms`)), CATCH_UP_TIMEOUT_MS);
    });
    const messages = await consumer.consume({
      callback: (m) => {
        if (mine !== this.reader) return;
        this.read(m);
        if (m.seq >= last) reached();
      },
    });
    try {
      await caughtUp;
    } finally {
      clearTimeout(timer);
      this.reader++;
      // Not awaited: a consumer's close waits for its pull to expire (seconds); its callbacks are ignored from now on.
      void messages.close();
      this.apply();
    }
  }

  /** Follows the stream from the view's last id: what the leader publishes reaches this view. */
  private follow(): void {
    if (this.leading || this.following || this.closed) return;
    const start = this.viewSeq() + 1;
    // Only the newest reader's messages count: one stopped may still call back, and two feeding one view could skip.
    const mine = ++this.reader;
    void this.brain.js.consumers
      .get(this.name, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start })
      .then((consumer) => consumer.consume({ callback: (m) => void (mine === this.reader && this.read(m)) }))
      .then(
        (messages) => {
          if (mine !== this.reader || this.leading || this.closed) void messages.close();
          else this.following = messages;
        },
        // JetStream away or busy (a server lost, a leader being elected): a view that falls behind only makes a takeover read more.
        () => mine === this.reader && setTimeout(() => this.follow(), FOLLOW_RETRY_MS).unref(),
      );
  }

  private stopFollowing(): void {
    this.reader++;
    void this.following?.close();
    this.following = undefined;
    this.apply();
  }

  /** The last sequence the view holds, rows and markers, counting what waits to be written. */
  private viewSeq(): number {
    return Math.max(this.incomingThrough, this.view.place()?.through ?? this.epoch) - this.epoch;
  }

  /** One message read from the stream: a row for the view, or a term marker (only its place). */
  private read(m: JsMsg): void {
    const id = this.epoch + m.seq;
    this.streamLast = Math.max(this.streamLast, m.seq + m.info.pending);
    if (this.leading || m.seq <= this.viewSeq()) return;
    if (m.seq > this.viewSeq() + 1) {
      // The stream dropped what this view missed (its max age): forget the gap, a resume from within it is told expired.
      this.apply();
      this.view.follow(this.epoch, id - 1);
    }
    const subject = m.headers?.get(SUBJECT_HEADER);
    if (subject && !m.headers?.has(TERM_HEADER)) {
      const row: Row = [id, subjectOfHeader(subject), Number(m.timestampNanos / 1_000_000n), m.data];
      // Nats-Msg-Id is `<subject> <key>`: the view remembers the key, for when this router leads.
      const msgId = m.headers?.get('Nats-Msg-Id');
      if (msgId) row.push(msgId.slice(msgId.indexOf(' ') + 1));
      this.incoming.push(row);
    }
    this.incomingThrough = id;
    if (!this.applyScheduled) {
      this.applyScheduled = true;
      setImmediate(() => this.apply());
    }
  }

  private apply(): void {
    this.applyScheduled = false;
    if (this.incomingThrough === 0) return;
    try {
      this.view.applied(this.incoming, this.incomingThrough);
    } catch (err) {
      // SQLITE_BUSY: another connection to the file (an operator's sqlite3, a backup) holds its write lock: kept for later.
      if (errorCode(err) !== 'SQLITE_BUSY') throw err;
      this.applyScheduled = true;
      setTimeout(() => this.apply(), 50);
      return;
    }
    this.incoming = [];
    this.acked = Math.max(this.acked, this.incomingThrough);
    this.incomingThrough = 0;
  }
}
