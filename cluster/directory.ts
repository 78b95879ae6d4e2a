/**
 * A router's directory of the cluster: which edge holds whose streams (the
 * membership, ./edge-membership.ts, kept from the edges' presence batches,
 * statuses and snapshots), and the sends, replays and hand-overs it takes on
 * the bus. The same Router (recipients = {user} ∪ subscribers) resolves each
 * send once over it, grouped by edge, and each edge gets one `deliver` batch
 * per window, however many sends the window held (./deliver-batcher.ts).
 */
import type { Logger } from 'pino';
import { epochMs, type LatencyBuckets } from '../router/latency.js';
import { Registry } from '../router/registry.js';
import { NotKeptError, Router, SendError, sendOnce, type Sent, type SubscriberSource } from '../router/router.js';
import { NotSequencerError, type MessageHistory, type Missed } from '../subsmanager/history.js';
import { partitionOf, partitionOfSend } from '../subsmanager/partitions.js';
import type { Subject } from '../subsmanager/subjects.js';
import { paced } from '../subsmanager/pacer.js';
import type { Bus } from './bus.js';
import { BATCH_OVERHEAD, CHUNK_BYTES, DeliverBatcher, ID_BYTES, type Numbering } from './deliver-batcher.js';
import { EdgeMembership, type EdgeView } from './edge-membership.js';
import { SUBJECTS, type BusMessage } from './messages.js';

export interface DirectoryOptions {
  /**
   * Batches leave at most once per window (ms), and at once after a quiet spell:
   * sends arriving close together share one batch per edge. Default: busWindowMs(live edges).
   */
  batchMs?: number;
  /** An edge not heard from for this long is dropped with its users (ms). */
  edgeTimeoutMs?: number;
  /** The largest message a send carries (the API's --max-message): batches are sized to take one more. */
  maxMessage: number;
  /** The highest user id a send may go to (--max-user-id). */
  maxUserId: number;
  /**
   * Each partition's history (index: partition; one for an unpartitioned cluster): numbers every send of its
   * subjects and keeps it, for streams that resume. This router numbers in the partitions it leads (see takeOver()).
   */
  histories?: MessageHistory[];
  logger: Logger;
}

export class Directory implements Numbering {
  /** One connection per user and edge holding that user's streams. */
  readonly registry = new Registry();
  readonly router: Router;
  /** The cluster's partitions of the subjects (subsmanager/partitions.ts): one history each. */
  readonly partitions: number;
  /** Bus messages dropped as not ours or not for the subject they came on (/stats busMalformed, c1m_bus_malformed_total). */
  malformed = 0;
  private malformedLoggedAt = 0;
  private readonly batcher: DeliverBatcher;
  private readonly membership: EdgeMembership;
  private readonly log: Logger;

  constructor(
    readonly bus: Bus,
    subscribers: SubscriberSource,
    private readonly options: DirectoryOptions,
  ) {
    this.partitions = Math.max(1, options.histories?.length ?? 1);
    const histories = options.histories;
    // Each send numbered in its subject's partition: where this router does not lead it, the history refuses (NotSequencerError).
    const historyOf = (subject: Subject) => histories![partitionOf(subject, this.partitions)];
    const log = histories?.length
      ? { append: (subject: Subject, body: Uint8Array, key?: string) => historyOf(subject).append(subject, body, key), keyed: (subject: Subject, key: string) => historyOf(subject).keyed(subject, key) }
      : undefined;
    this.router = new Router(this.registry, subscribers, { maxUserId: options.maxUserId, maxMessage: options.maxMessage }, log);
    const maxChunkBytes = options.maxMessage + 1 + CHUNK_BYTES + ID_BYTES;
    if (maxChunkBytes + BATCH_OVERHEAD > bus.maxPayload) {
      throw new Error(`max message (${options.maxMessage} bytes) does not fit in one bus message: the bus (${bus.server}) carries at most ${bus.maxPayload} bytes (nats-server's max_payload)`);
    }
    this.log = options.logger;
    this.batcher = new DeliverBatcher(bus, maxChunkBytes, this, options.batchMs);
    this.membership = new EdgeMembership(bus, this.registry, this.batcher, { edgeTimeoutMs: options.edgeTimeoutMs, partitions: this.partitions, logger: this.log, refuse: this.refuse });
  }

  /** The batch window now (ms): fixed by batchMs, or following the number of live edges. */
  get batchWindowMs(): number {
    return this.batcher.windowMs;
  }

  /** The sequencer lease's term this router delivers in, per partition it leads (see subsmanager/sequencer.ts); none without a history. */
  private readonly terms = new Map<number, number>();

  /** The history of `partition`, if this router keeps one. */
  historyOf(partition: number): MessageHistory | undefined {
    return this.options.histories?.[partition];
  }

  /** The term this router leads `partition` in (0: none, or no history). */
  termOf(partition: number): number {
    return this.terms.get(partition) ?? 0;
  }

  /** Whether this router takes the sends of `partition` now. */
  leads(partition: number): boolean {
    return this.terms.has(partition);
  }

  /**
   * Starts taking the sends and replays of `partition` (the `routers` queue
   * group). With a history, only while this router holds that partition's lease
   * of term `term`; it first delivers again, in id order, what the previous
   * holder may have kept without sending (`redeliver`, from the history):
   * edges drop what a stream already has by its id, and batches of older terms.
   * With several partitions, the first one led also makes this router an entry
   * for every send (`c1m.send`), forwarded to the leader of its subject's partition.
   */
  takeOver(partition = 0, term = 0, redeliver: Missed[] = []): void {
    this.terms.set(partition, term);
    this.batcher.sendingPartition = partition;
    for (const missed of redeliver) this.router.redeliver(missed.subject, missed.body, missed.id);
    this.batcher.flush();
    if (redeliver.length > 0) this.log.info({ partition, term, messages: redeliver.length, from: redeliver[0].id }, 'delivered the previous term\'s last messages again');
    const { bus, options } = this;
    if (this.partitions === 1) {
      bus.subscribe(SUBJECTS.send, this.takeSend, 'routers');
      if (options.histories?.length) bus.subscribe(SUBJECTS.replay, (message, replyTo) => this.replay(0, message, replyTo), 'routers');
      return;
    }
    bus.subscribe(SUBJECTS.sendIn(partition), (message, replyTo) => this.takeSendIn(partition, message, replyTo), 'routers');
    bus.subscribe(SUBJECTS.replayIn(partition), (message, replyTo) => this.replay(partition, message, replyTo), 'routers');
    if (!this.entry) bus.subscribe(SUBJECTS.send, this.forwardSend, 'routers');
    this.entry = true;
  }

  /** Whether this router takes sends on `c1m.send` (from its first partition led on, whatever it leads later). */
  private entry = false;

  /**
   * Stops taking `partition`'s sends and replays, its lease handed to another router (History.handOver): the
   * batches numbered so far leave first, then each edge hears how many of this run's batches of the partition
   * there were (one it missed ends its streams, which resume).
   */
  handOver(partition: number): void {
    if (!this.terms.delete(partition)) return;
    this.bus.unsubscribe(SUBJECTS.sendIn(partition));
    this.bus.unsubscribe(SUBJECTS.replayIn(partition));
    this.batcher.flush();
    for (const link of this.membership.edges.values()) {
      const stopped = this.batcher.stopped(link, partition);
      if (stopped) this.bus.publish(SUBJECTS.edge(link.id), { ...stopped, partition });
    }
  }

  /** The answer to a send over the bus; where there are several partitions it says how many, so that a backend learns where to send next (cluster/sender.ts). */
  private answer(replyTo: string, sent: { delivered: number; error?: string; id?: number; duplicate?: true }): void {
    this.bus.publish(replyTo, { t: 'sent', ...sent, ...(this.partitions > 1 && { partitions: this.partitions }) });
  }

  /**
   * A send on `c1m.send.<p>`, from a backend that knows the partitions or passed on by a router. One of another
   * partition (a backend that counts them wrong) is refused rather than passed on: two routers that disagree on
   * the partitions would otherwise pass it back and forth.
   */
  private takeSendIn(partition: number, message: BusMessage, replyTo: string | undefined): void {
    if (message.t !== 'send') return;
    const own = partitionOfSend(message.user, this.partitions);
    // On its way when this router handed the partition over: to the new leader.
    if (own === partition && !this.leads(partition)) return this.pass(partition, message, replyTo);
    if (own === partition) return this.takeSend(message, replyTo);
    if (replyTo) this.answer(replyTo, { delivered: 0, error: `${JSON.stringify(message.user)} is in partition ${own} of ${this.partitions}, not ${partition}: send it to c1m.send.${own}, or to c1m.send` });
  }

  /** A send over the bus to a subject of a partition this router leads: numbered, delivered, answered once kept. */
  private readonly takeSend = (message: BusMessage, replyTo: string | undefined): void => {
    if (message.t !== 'send') return;
    if (!this.ready) return void (replyTo && this.answer(replyTo, { delivered: 0, error: 'the router is still learning who is connected: try again' }));
    // Waited for (kept before the backend hears it was taken, as over HTTP) only when a backend waits for the answer.
    const history = replyTo === undefined ? undefined : this.options.histories?.[partitionOfSend(message.user, this.partitions)];
    let sent: Sent | Promise<Sent>;
    try {
      sent = sendOnce(this.router, history, message.user, message.key, () => this.send(message.user, message.message, message.key));
    } catch (err) {
      // Refused as the HTTP API refuses it (SendError), or the history's lease is no longer this router's (a hand-over):
      // nothing was numbered or delivered. Anything else is answered too, so that no backend waits for nothing.
      const retry = err instanceof NotSequencerError ? ': try again' : '';
      if (!(err instanceof SendError || err instanceof NotSequencerError || err instanceof NotKeptError)) this.log.error({ err }, 'a send over the bus failed');
      return void (replyTo && this.answer(replyTo, { delivered: 0, error: `${(err as Error).message}${retry}` }));
    }
    if (!replyTo) return;
    if (!(sent instanceof Promise)) return this.answer(replyTo, sent);
    sent.then(
      (kept) => this.answer(replyTo, kept),
      (err: Error) => this.answer(replyTo, { delivered: 0, error: err.message }),
    );
  };

  /** Sends passed to another router, the leader of their partition (over the bus, and over HTTP by router-process.ts): the hop a backend that knows the partitions saves. */
  passed = 0;

  /** A send that entered here (`c1m.send`): taken if this router leads its subject's partition, else passed to the leader, who answers the backend. */
  private readonly forwardSend = (message: BusMessage, replyTo: string | undefined): void => {
    if (message.t !== 'send') return;
    const partition = partitionOfSend(message.user, this.partitions);
    if (this.leads(partition)) return this.takeSend(message, replyTo);
    this.pass(partition, message, replyTo);
  };

  private pass(partition: number, message: BusMessage, replyTo: string | undefined): void {
    this.passed++;
    this.bus.publish(SUBJECTS.sendIn(partition), message, replyTo);
  }

  /**
   * What a resuming stream's user missed. The edge logged the stream in (a
   * holder that buffers) and flushed its presence before asking, so that login
   * is in the directory now; the batches waiting go out before the answer, so
   * every live message the replay also holds reaches the edge before it, and
   * the edge keeps only those after the replay's last id.
   */
  private replay(partition: number, message: BusMessage, replyTo: string | undefined): void {
    if (!replyTo) return;
    const history = this.options.histories![partition];
    // Where there are several partitions, every answer says the partition's head as it leaves (after the batches).
    const head = (): { head?: number } => (this.partitions > 1 ? { head: history.lastId } : {});
    if (message.t === 'head') {
      this.batcher.flush();
      const now = head();
      return history.afterCommit(() => this.bus.publish(replyTo, { t: 'replayed', ids: [], bodies: [], more: false, ...now }));
    }
    if (message.t !== 'replay') return;
    // The history reads only what the budget takes (the first message always: one fits a bus message, as the constructor checks).
    this.pacedReplay(partition, message.user, message.after, Math.min(message.budget, this.bus.maxPayload - BATCH_OVERHEAD), message.topics).then(
      (answer) => {
        this.batcher.flush();
        const now = head();
        // After the batches, and once what it holds is committed.
        history.afterCommit(() => {
          if (answer.lost) return this.bus.publish(replyTo, { t: 'replayed', ids: [], bodies: [], more: false, lost: answer.why, ...now });
          this.bus.publish(replyTo, { t: 'replayed', ids: answer.messages.map((m) => m.id), bodies: answer.messages.map((m) => m.body), more: answer.more, ...now });
        });
      },
      // Unanswered, the edge's request times out and its stream ends: its client comes back.
      (err: Error) => this.log.error({ err }, 'a replay failed'),
    );
  }

  /** Replays a few per turn (see subsmanager/pacer.ts), so that a burst of resumes does not hold up the sends. */
  private readonly pacedReplay = paced((partition: number, user: number, after: number, budget: number, topics?: readonly string[]) =>
    this.options.histories![partition].replay(user, after, budget, topics),
  );

  /** False until learned() resolves: sends over the bus are refused meanwhile. */
  ready = false;

  /**
   * Resolves once the directory knows who is connected: at least `minMs` after
   * the start (every live edge has sent a status by then) and every edge heard
   * of has answered with its snapshot, or after `maxMs` whatever the edges did.
   */
  async learned(minMs: number, maxMs: number): Promise<void> {
    await this.membership.learned(minMs, maxMs);
    this.ready = true;
  }

  /** Asks every edge for its full state (start, NATS reconnect). */
  syncAll(): void {
    this.membership.syncAll();
  }

  /** Delivers to `subject` (a user) and its subscribers wherever they are connected; returns the streams the directory holds for them. */
  send(subject: Subject, message: string | Uint8Array, key?: string): number {
    this.batcher.sendingAt = epochMs();
    this.batcher.sendingPartition = partitionOfSend(subject, this.partitions);
    const delivered = this.router.send(subject, message, key);
    this.batcher.scheduleFlush();
    return delivered;
  }

  /** The edges as /stats shows them, up and recently down. */
  edgeViews(): EdgeView[] {
    return this.membership.edgeViews();
  }

  /** Every edge's send-to-write latency counts, added up. */
  latency(): LatencyBuckets {
    return this.membership.latency();
  }

  close(): void {
    this.membership.close();
    this.batcher.close();
    // Each edge learns it missed nothing from this run (or that it did, and its streams must resume).
    for (const link of this.membership.edges.values()) {
      link.batches.forEach((_, partition) => {
        const stopped = this.batcher.stopped(link, partition);
        if (stopped) this.bus.publish(SUBJECTS.edge(link.id), { ...stopped, ...(this.partitions > 1 && { partition }) });
      });
    }
  }

  /**
   * Counts and drops a bus message that is not ours or not for its subject; a malformed send is answered, so that its backend
   * does not wait for nothing (the checks of the send's values, past their types, are the router's: see takeSend).
   */
  readonly refuse = (subject: string, why: string, replyTo: string | undefined): void => {
    this.malformed++;
    // One line a second at most: a hostile edge could otherwise fill the router's log.
    if (Date.now() - this.malformedLoggedAt >= 1000) {
      this.malformedLoggedAt = Date.now();
      this.log.warn({ subject, why, malformed: this.malformed }, 'malformed bus message dropped');
    }
    if (subject === SUBJECTS.send && replyTo) this.bus.publish(replyTo, { t: 'sent', delivered: 0, error: why });
  };
}
