/**
 * A router's deliver batches: the chunks a send makes for the streams of each
 * edge go into that edge's batch (one per partition), and each edge gets one
 * `deliver` per window, however many sends the window held. A numbered batch
 * leaves once the history has committed its messages.
 */
import type { Chunk } from '../router/router.js';
import type { MessageHistory } from '../subsmanager/history.js';
import type { Subject } from '../subsmanager/subjects.js';
import type { Bus } from './bus.js';
import { CHUNK_OVERHEAD_BYTES, packChunks, userBytes } from './deliver-batch.js';
import { Batch, type ChunkQueue, type EdgeLink } from './edge-link.js';
import { MIN_WINDOW_MS } from '../server/defaults.js';
import { busWindowMs, SUBJECTS, type BusMessage } from './messages.js';

/** Bytes of a deliver batch that its estimate does not count (the envelope), generously. */
export const BATCH_OVERHEAD = 1024;
/** What a batch's estimate adds per chunk beyond its bytes (its header in the batch's layout), and per target at most (a user id, or a topic's number and header). */
export const CHUNK_BYTES = CHUNK_OVERHEAD_BYTES;
export const ID_BYTES = 8;

/** What numbering a batch takes: the cluster's partitions, and each one's history and the term this router delivers it in. */
export interface Numbering {
  readonly partitions: number;
  historyOf(partition: number): MessageHistory | undefined;
  termOf(partition: number): number;
}

export class DeliverBatcher implements ChunkQueue {
  /** This router run, as its numbered batches name it. */
  private readonly boot = `${process.pid}-${Date.now().toString(36)}`;
  /** Edge links made so far (see EdgeLink.run). */
  private links = 0;
  /** Edges with a batch waiting for the window to close. */
  private readonly dirty = new Set<EdgeLink>();
  /** Start of the send being resolved now (epoch ms), stamped on its chunks for the edges' latency histogram. */
  sendingAt = 0;
  /** The partition of the send being resolved now: its chunks go in that partition's batches. */
  sendingPartition = 0;
  /** The batch window now (ms): fixed by batchMs, or following the number of live edges. */
  windowMs: number;
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlush = 0;

  constructor(
    private readonly bus: Bus,
    /** The largest chunk a send may make: batches leave room for one more. */
    private readonly maxChunkBytes: number,
    private readonly numbering: Numbering,
    /** A fixed window (ms); without, busWindowMs(live edges). */
    private readonly batchMs: number | undefined,
  ) {
    this.windowMs = batchMs ?? MIN_WINDOW_MS;
  }

  /** The run of a new link (see EdgeLink.run). */
  nextRun(): string {
    return `${this.boot}.${++this.links}`;
  }

  /** Follows the number of live edges with the window, where it is not fixed. */
  followEdges(live: number): void {
    this.windowMs = this.batchMs ?? busWindowMs(live);
  }

  /**
   * Adds `target` (a user, or a topic: the first of its chunk's, see Registry.deliverTopic) to the batch of `link`'s edge
   * for the partition being sent in (sendingPartition); a chunk shared by several (one send) is carried once.
   */
  queue(link: EdgeLink, target: Subject, chunk: Chunk): void {
    const partition = this.sendingPartition;
    const batch = (link.batches[partition] ??= new Batch());
    let last = batch.chunks.length - 1;
    if (last >= 0 && batch.chunks[last] === chunk) {
      batch.targets[last].push(target);
    } else {
      // A chunk that would take the batch over the bus's largest message starts the next one.
      if (last >= 0 && batch.bytes + BATCH_OVERHEAD + chunk.length + CHUNK_BYTES + ID_BYTES > this.bus.maxPayload) {
        this.flushBatch(link, partition, batch);
        last = -1;
      }
      if (last < 0) this.dirty.add(link);
      batch.chunks.push(chunk);
      batch.targets.push([target]);
      batch.sentAt.push(this.sendingAt);
      if (chunk.id !== undefined) batch.ids.push(chunk.id);
      batch.bytes += chunk.length + CHUNK_BYTES;
    }
    batch.bytes += typeof target === 'number' ? userBytes(target) : target.length + ID_BYTES;
    // Out at once before the next chunk could take it over the bus's largest message.
    if (batch.bytes + BATCH_OVERHEAD + this.maxChunkBytes > this.bus.maxPayload) this.flushBatch(link, partition, batch);
  }

  /**
   * After a send: like Nagle, a send after a quiet spell goes out at the end of this turn; while sends keep coming,
   * batches leave at most once per window, so each edge wakes at most 1000/windowMs times a second.
   */
  scheduleFlush(): void {
    if (this.dirty.size === 0 || this.flushTimer) return;
    const wait = this.lastFlush + this.windowMs - performance.now();
    this.flushTimer = wait > 0 ? setTimeout(this.flush, wait) : (setImmediate(this.flush) as unknown as NodeJS.Timeout);
  }

  /** Sends every batch waiting. */
  readonly flush = (): void => {
    this.flushTimer = undefined;
    this.lastFlush = performance.now();
    for (const link of this.dirty) {
      link.batches.forEach((batch, partition) => this.flushBatch(link, partition, batch));
      this.dirty.delete(link);
    }
  };

  /** One partition's batch; an unpartitioned cluster's carries no partition, as before partitions. */
  private flushBatch(link: EdgeLink, partition: number, batch: Batch): void {
    if (batch.chunks.length === 0) return;
    const numbered = batch.ids.length > 0 && { run: link.run, batch: ++batch.sent, term: this.numbering.termOf(partition) };
    const partitioned = this.numbering.partitions > 1 && { partition };
    const deliver: BusMessage = { t: 'deliver', ...packChunks(batch.chunks, batch.targets, batch.sentAt, batch.ids), ...numbered, ...partitioned };
    const history = numbered ? this.numbering.historyOf(partition) : undefined;
    // Out once its messages are committed (a replicated history's acknowledgement); never, where they will not be.
    if (history) history.afterCommit(() => this.bus.publish(SUBJECTS.edge(link.id), deliver));
    else this.bus.publish(SUBJECTS.edge(link.id), deliver);
    batch.chunks = [];
    batch.targets = [];
    batch.sentAt = [];
    batch.ids = [];
    batch.bytes = 0;
  }

  /** What `link`'s edge hears when this run stops sending it `partition`'s batches: how many there were (none: nothing to hear). */
  stopped(link: EdgeLink, partition: number): { t: 'stopped'; run: string; batch: number } | undefined {
    const sent = link.batches[partition]?.sent ?? 0;
    return !link.down && sent > 0 ? { t: 'stopped', run: link.run, batch: sent } : undefined;
  }

  /** Stops the window's timer and sends what waits. */
  close(): void {
    clearTimeout(this.flushTimer);
    clearImmediate(this.flushTimer as unknown as NodeJS.Immediate);
    this.flush();
  }
}
