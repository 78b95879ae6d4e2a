/**
 * A router's directory of the cluster: which edge holds whose streams, kept
 * from the edges' presence batches, statuses and snapshots. The same Router
 * (recipients = {user} ∪ subscribers) resolves each send once over it, grouped
 * by edge, and each edge gets one `deliver` batch per window, however many
 * sends the window held.
 */
import type { Logger } from 'pino';
import { epochMs, LatencyHistogram, type LatencyBuckets } from '../router/latency.js';
import { Registry, type Connection } from '../router/registry.js';
import { Router, SendError, type Chunk, type SubscriberSource } from '../router/router.js';
import { DEFAULTS, MIN_WINDOW_MS } from '../server/defaults.js';
import { NotSequencerError, type MessageHistory, type Missed } from '../subsmanager/history.js';
import { partitionOf, partitionOfSend } from '../subsmanager/partitions.js';
import type { Subject } from '../subsmanager/subjects.js';
import { paced } from '../subsmanager/pacer.js';
import type { Bus } from './bus.js';
import { CHUNK_OVERHEAD_BYTES, packChunks, userBytes } from './deliver-batch.js';
import { busWindowMs, edgeOfPresence, SUBJECTS, type BusMessage, type EdgeStats } from './messages.js';

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
   * subjects and keeps it, for streams that resume. This router numbers in the partitions it leads (see lead()).
   */
  histories?: MessageHistory[];
  logger: Logger;
}

/** Bytes of a deliver batch that its estimate does not count (the envelope), generously. */
const BATCH_OVERHEAD = 1024;
/** What a batch's estimate adds per chunk beyond its bytes (its header in the batch's layout), and per target at most (a user id, or a topic's number and header). */
const CHUNK_BYTES = CHUNK_OVERHEAD_BYTES;
const ID_BYTES = 8;
/** Down edges stay listed in /stats this long. */
const FORGET_DOWN_MS = 60_000;

export interface EdgeView extends Omit<EdgeStats, 'state'> {
  id: string;
  /** As the edge reports it, or down once its statuses stopped. */
  state: EdgeStats['state'] | 'down';
  /** In the router's directory: streams, and whether it has this edge's snapshot yet. */
  directoryStreams: number;
  synced: boolean;
  lastSeenMs: number;
}

/** All streams of one user on one edge, or all those listening to one topic there, as one connection of the router's registry. */
class EdgeStreams implements Connection {
  count = 0;
  /** The registry's key for a user's streams; a topic's listeners are keyed by the topic (Registry.listen). */
  readonly user: number;
  constructor(
    readonly target: Subject,
    private readonly link: EdgeLink,
  ) {
    this.user = typeof target === 'number' ? target : 0;
  }
  write(chunk: Buffer): number {
    this.link.queue(this.target, chunk);
    return this.count;
  }
  /** The edge owns the sockets; a router shutting down leaves them open. */
  close(): void {}
}

/** What a router knows of one edge, and the batch it is filling for it. */
class EdgeLink {
  /** Users' streams, and topics' listeners (not counted in streamCount), on this edge. */
  readonly streams = new Map<Subject, EdgeStreams>();
  /** Streams in `streams`, kept as they change: /stats and /metrics read it, and at a million users a count by iteration stalls the router. */
  streamCount = 0;
  seq = 0;
  synced = false;
  /** When a snapshot was last asked for (0: not pending). */
  syncAskedAt = 0;
  /** Snapshot parts received so far, and the part expected next. */
  incoming: Subject[] = [];
  nextPart = 0;
  lastSeen = Date.now();
  down = false;
  stats?: EdgeStats;
  latency: LatencyBuckets = { counts: [], sum: 0 };
  /** What waits for each partition's next batch to this edge (index: partition). */
  readonly batches: Batch[] = [];
  /** This link's count of batches: the router's run, and this link's place in it (a link made again after the edge was dropped counts anew). */
  readonly run: string;

  constructor(
    readonly id: string,
    readonly boot: string,
    private readonly owner: Directory,
  ) {
    this.run = `${owner.boot}.${++owner.links}`;
  }

  add(subject: Subject): void {
    let held = this.streams.get(subject);
    if (!held) {
      held = new EdgeStreams(subject, this);
      this.streams.set(subject, held);
      if (typeof subject === 'number') this.owner.registry.login(held);
      else this.owner.registry.listen(subject, held);
    }
    held.count++;
    if (typeof subject === 'number') this.streamCount++;
  }

  remove(subject: Subject): void {
    const held = this.streams.get(subject);
    if (!held) return;
    if (typeof subject === 'number') this.streamCount--;
    if (--held.count <= 0) {
      this.streams.delete(subject);
      this.release(held);
    }
  }

  private release(held: EdgeStreams): void {
    if (typeof held.target === 'number') this.owner.registry.logout(held);
    else this.owner.registry.unlisten(held.target, held);
  }

  clear(): void {
    for (const held of this.streams.values()) this.release(held);
    this.streams.clear();
    this.streamCount = 0;
  }

  /**
   * Adds `target` (a user, or a topic: the first of its chunk's, see Registry.deliverTopic) to the batch of the
   * partition being sent in (Directory.sendingPartition); a chunk shared by several (one send) is carried once.
   */
  queue(target: Subject, chunk: Chunk): void {
    const partition = this.owner.sendingPartition;
    const batch = (this.batches[partition] ??= new Batch());
    let last = batch.chunks.length - 1;
    if (last >= 0 && batch.chunks[last] === chunk) {
      batch.targets[last].push(target);
    } else {
      // A chunk that would take the batch over the bus's largest message starts the next one.
      if (last >= 0 && batch.bytes + BATCH_OVERHEAD + chunk.length + CHUNK_BYTES + ID_BYTES > this.owner.bus.maxPayload) {
        this.flushBatch(partition, batch);
        last = -1;
      }
      if (last < 0) this.owner.dirty.add(this);
      batch.chunks.push(chunk);
      batch.targets.push([target]);
      batch.sentAt.push(this.owner.sendingAt);
      if (chunk.id !== undefined) batch.ids.push(chunk.id);
      batch.bytes += chunk.length + CHUNK_BYTES;
    }
    batch.bytes += typeof target === 'number' ? userBytes(target) : target.length + ID_BYTES;
    // Out at once before the next chunk could take it over the bus's largest message.
    if (batch.bytes + BATCH_OVERHEAD + this.owner.maxChunkBytes > this.owner.bus.maxPayload) this.flushBatch(partition, batch);
  }

  flush(): void {
    this.batches.forEach((batch, partition) => this.flushBatch(partition, batch));
    this.owner.dirty.delete(this);
  }

  /** One partition's batch; an unpartitioned cluster's carries no partition, as before partitions. */
  private flushBatch(partition: number, batch: Batch): void {
    if (batch.chunks.length === 0) return;
    const numbered = batch.ids.length > 0 && { router: this.run, batch: ++batch.sent, term: this.owner.termOf(partition) };
    const partitioned = this.owner.partitions > 1 && { partition };
    const deliver: BusMessage = { t: 'deliver', ...packChunks(batch.chunks, batch.targets, batch.sentAt, batch.ids), ...numbered, ...partitioned };
    const history = numbered ? this.owner.historyOf(partition) : undefined;
    // Out once its messages are committed (a replicated history's acknowledgement); never, where they will not be.
    if (history) history.afterCommit(() => this.owner.bus.publish(SUBJECTS.edge(this.id), deliver));
    else this.owner.bus.publish(SUBJECTS.edge(this.id), deliver);
    batch.chunks = [];
    batch.targets = [];
    batch.sentAt = [];
    batch.ids = [];
    batch.bytes = 0;
  }
}

/** One partition's deliveries to one edge, waiting for the window to close. */
class Batch {
  chunks: Uint8Array[] = [];
  targets: Subject[][] = [];
  sentAt: number[] = [];
  /** Each chunk's message id, where the router keeps a history. */
  ids: number[] = [];
  bytes = 0;
  /** Batches of this partition sent to this edge by this link (numbered where there are ids, see BusMessage 'deliver'). */
  sent = 0;
}

export class Directory {
  /** This router run, as its numbered batches name it. */
  readonly boot = `${process.pid}-${Date.now().toString(36)}`;
  /** Edge links made so far (see EdgeLink.run). */
  links = 0;
  /** One connection per user and edge holding that user's streams. */
  readonly registry = new Registry();
  readonly router: Router;
  /** The largest chunk a send may make: batches leave room for one more. */
  readonly maxChunkBytes: number;
  readonly edges = new Map<string, EdgeLink>();
  /** Edges with a batch waiting for the window to close. */
  readonly dirty = new Set<EdgeLink>();
  /** Start of the send being resolved now (epoch ms), stamped on its chunks for the edges' latency histogram. */
  sendingAt = 0;
  /** The partition of the send being resolved now: its chunks go in that partition's batches. */
  sendingPartition = 0;
  /** The cluster's partitions of the subjects (subsmanager/partitions.ts): one history each. */
  readonly partitions: number;
  /** Bus messages dropped as not ours or not for the subject they came on (/stats busMalformed, c1m_bus_malformed_total). */
  malformed = 0;
  private malformedLoggedAt = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlush = 0;
  /** The batch window now (ms): fixed by batchMs, or following the number of live edges. */
  batchWindowMs: number;
  private readonly watchdog: NodeJS.Timeout;
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
    this.maxChunkBytes = options.maxMessage + 1 + CHUNK_BYTES + ID_BYTES;
    if (this.maxChunkBytes + BATCH_OVERHEAD > bus.maxPayload) {
      throw new Error(`max message (${options.maxMessage} bytes) does not fit in one bus message: the bus (${bus.server}) carries at most ${bus.maxPayload} bytes (nats-server's max_payload)`);
    }
    this.log = options.logger;
    this.batchWindowMs = options.batchMs ?? MIN_WINDOW_MS;
    bus.subscribe(SUBJECTS.anyPresence, this.onEdgeMessage);
    this.watchdog = setInterval(this.dropSilentEdges, 500);
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
  lead(partition = 0, term = 0, redeliver: Missed[] = []): void {
    this.terms.set(partition, term);
    this.sendingPartition = partition;
    for (const missed of redeliver) this.router.redeliver(missed.subject, missed.body, missed.id);
    this.flush();
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
    this.flush();
    for (const link of this.edges.values()) {
      const sent = link.batches[partition]?.sent ?? 0;
      if (!link.down && sent > 0) this.bus.publish(SUBJECTS.edge(link.id), { t: 'stopped', router: link.run, batch: sent, partition });
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
    let delivered = 0;
    let first: number | undefined;
    try {
      // A retry of a send that was kept (its answer lost): the first one's id, nothing sent again.
      if (message.key !== undefined) first = this.router.sentBefore(message.user, message.key);
      if (first === undefined) delivered = this.send(message.user, message.message, message.key);
    } catch (err) {
      // Refused as the HTTP API refuses it (SendError), or the history's lease is no longer this router's (a hand-over):
      // nothing was numbered or delivered. Anything else is answered too, so that no backend waits for nothing.
      const retry = err instanceof NotSequencerError ? ': try again' : '';
      if (!(err instanceof SendError || err instanceof NotSequencerError)) this.log.error({ err }, 'a send over the bus failed');
      return void (replyTo && this.answer(replyTo, { delivered: 0, error: `${(err as Error).message}${retry}` }));
    }
    if (!replyTo) return;
    const history = this.options.histories?.[partitionOfSend(message.user, this.partitions)];
    if (!history) return this.answer(replyTo, { delivered });
    const sent = first === undefined ? { delivered, id: history.lastId } : { delivered: 0, id: first, duplicate: true as const };
    // Kept before the backend hears it was taken, as over HTTP (a duplicate's first may still wait for the stream).
    history.afterCommit(
      () => this.answer(replyTo, sent),
      () => this.answer(replyTo, { delivered: 0, error: 'the history could not keep the message (not acknowledged): try again' }),
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
      this.flush();
      const now = head();
      return history.afterCommit(() => this.bus.publish(replyTo, { t: 'replayed', ids: [], bodies: [], more: false, ...now }));
    }
    if (message.t !== 'replay') return;
    // The history reads only what the budget takes (the first message always: one fits a bus message, see maxChunkBytes).
    this.pacedReplay(partition, message.user, message.after, Math.min(message.budget, this.bus.maxPayload - BATCH_OVERHEAD), message.topics).then(
      (answer) => {
        this.flush();
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
    const start = performance.now();
    while (performance.now() - start < maxMs) {
      const synced = [...this.edges.values()].every((link) => link.synced || link.down);
      if (performance.now() - start >= minMs && synced) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    this.ready = true;
  }

  /** A request for an edge's state, which tells it the cluster's partitions where there are several (its streams keep an id per partition). */
  private syncMessage(): BusMessage {
    return this.partitions > 1 ? { t: 'sync', partitions: this.partitions } : { t: 'sync' };
  }

  /** Asks every edge for its full state (start, NATS reconnect). */
  syncAll(): void {
    this.bus.publish(SUBJECTS.sync, this.syncMessage());
  }

  /** Delivers to `subject` (a user) and its subscribers wherever they are connected; returns the streams the directory holds for them. */
  send(subject: Subject, message: string | Uint8Array, key?: string): number {
    this.sendingAt = epochMs();
    this.sendingPartition = partitionOfSend(subject, this.partitions);
    const delivered = this.router.send(subject, message, key);
    if (this.dirty.size > 0 && !this.flushTimer) {
      // Like Nagle: a send after a quiet spell goes out at the end of this turn; while sends keep coming,
      // batches leave at most once per window, so each edge wakes at most 1000/batchWindowMs times a second.
      const wait = this.lastFlush + this.batchWindowMs - performance.now();
      this.flushTimer = wait > 0 ? setTimeout(this.flush, wait) : (setImmediate(this.flush) as unknown as NodeJS.Timeout);
    }
    return delivered;
  }

  /** The edges as /stats shows them, up and recently down. */
  edgeViews(): EdgeView[] {
    return [...this.edges.values()].map((link) => ({
      ...(link.stats ?? { pid: 0, streams: 0, capacity: 0, chunks: 0, bytes: 0, slowConsumerCloses: 0, authFailures: 0, rss: 0, state: 'up' }),
      id: link.id,
      state: link.down ? 'down' : (link.stats?.state ?? 'up'),
      directoryStreams: link.streamCount,
      synced: link.synced,
      lastSeenMs: Date.now() - link.lastSeen,
    }));
  }

  /** Every edge's send-to-write latency counts, added up. */
  latency(): LatencyBuckets {
    return LatencyHistogram.merge([...this.edges.values()].filter((l) => l.latency.counts.length > 0).map((l) => l.latency));
  }

  close(): void {
    clearInterval(this.watchdog);
    clearTimeout(this.flushTimer);
    clearImmediate(this.flushTimer as unknown as NodeJS.Immediate);
    this.flush();
    // Each edge learns it missed nothing from this run (or that it did, and its streams must resume).
    for (const link of this.edges.values()) {
      if (link.down) continue;
      link.batches.forEach(({ sent }, partition) => {
        if (sent > 0) this.bus.publish(SUBJECTS.edge(link.id), { t: 'stopped', router: link.run, batch: sent, ...(this.partitions > 1 && { partition }) });
      });
    }
  }

  private readonly flush = (): void => {
    this.flushTimer = undefined;
    this.lastFlush = performance.now();
    for (const link of this.dirty) link.flush();
  };

  /**
   * Counts and drops a bus message that is not ours or not for its subject; a malformed send is answered, so that its backend
   * does not wait for nothing (the checks of the send's values, past their types, are the router's: see lead()).
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

  /** What an edge says on its own subject: the edge is the subject's, whatever a body might claim. */
  private readonly onEdgeMessage = (message: BusMessage, _replyTo: string | undefined, subject: string): void => {
    const edge = edgeOfPresence(subject);
    if (edge === undefined || (message.t !== 'presence' && message.t !== 'status' && message.t !== 'state')) return this.refuse(subject, `a ${message.t} on ${subject}`, undefined);
    const link = this.linkFor(edge, message);
    link.lastSeen = Date.now();
    switch (message.t) {
      case 'presence':
        if (!link.synced || message.seq <= link.seq) return; // the pending snapshot covers it, or it did
        if (message.seq !== link.seq + 1) return this.askSync(link, `missed presence ${link.seq + 1}..${message.seq - 1}`);
        link.seq = message.seq;
        // Logins first: a user who left and came back within one batch never drops below their real count.
        for (const subject of message.in) link.add(subject);
        for (const subject of message.out) link.remove(subject);
        return;
      case 'status':
        link.stats = message.stats;
        link.latency = message.latency;
        if (message.stats.state === 'stopping') return this.forget(link, 'stopped');
        if (!link.synced || message.seq > link.seq) this.askSync(link, link.synced ? 'status ahead of presence' : 'no snapshot yet');
        return;
      case 'state':
        // Parts arrive in order or the snapshot is incomplete (a slow consumer's messages may be dropped by NATS).
        if (message.part !== 0 && message.part !== link.nextPart) {
          const why = `snapshot part ${link.nextPart} lost`;
          link.incoming = [];
          link.nextPart = 0;
          return this.askSync(link, why);
        }
        // concat, not push(...users): a part holds tens of thousands of ids, too many to pass as arguments.
        link.incoming = message.part === 0 ? message.users : link.incoming.concat(message.users);
        link.nextPart = message.part + 1;
        link.stats = message.stats;
        if (!message.last) return;
        link.clear();
        for (const subject of link.incoming) link.add(subject);
        link.incoming = [];
        link.nextPart = 0;
        link.seq = message.seq;
        link.synced = true;
        link.syncAskedAt = 0;
        this.log.info({ edge: link.id, streams: link.streamCount, seq: link.seq }, 'edge synced');
        return;
    }
  };

  /** The link for this edge run; a new run (restart) replaces the old one and its streams. */
  private linkFor(edge: string, message: Extract<BusMessage, { boot: string }>): EdgeLink {
    let link = this.edges.get(edge);
    if (link && link.boot === message.boot && !link.down) return link;
    if (link) link.clear();
    link = new EdgeLink(edge, message.boot, this);
    this.edges.set(edge, link);
    this.log.info({ edge: link.id, boot: link.boot }, 'edge joined');
    if (message.t !== 'state') this.askSync(link, 'new edge');
    return link;
  }

  private askSync(link: EdgeLink, why: string): void {
    link.synced = false;
    // One request per second at most; the answer may simply be on its way.
    if (Date.now() - link.syncAskedAt < 1000) return;
    link.syncAskedAt = Date.now();
    this.log.info({ edge: link.id, why }, 'asking edge for its state');
    this.bus.publish(SUBJECTS.edge(link.id), this.syncMessage());
  }

  private forget(link: EdgeLink, why: string): void {
    if (link.down) return;
    link.clear();
    link.down = true;
    link.synced = false;
    this.log.warn({ edge: link.id, why }, 'edge dropped from the directory');
  }

  /** Also follows the number of live edges with the batch window, twice a second. */
  private readonly dropSilentEdges = (): void => {
    const now = Date.now();
    let live = 0;
    for (const link of this.edges.values()) {
      if (!link.down && now - link.lastSeen > (this.options.edgeTimeoutMs ?? DEFAULTS.edgeTimeoutMs)) this.forget(link, 'no status');
      else if (link.down && now - link.lastSeen > FORGET_DOWN_MS) this.edges.delete(link.id);
      if (!link.down) live++;
    }
    this.batchWindowMs = this.options.batchMs ?? busWindowMs(live);
  };
}
