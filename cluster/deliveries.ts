/**
 * What an edge does with its routers' deliver batches: each chunk to the
 * streams of its targets, in order, with the checks that keep ids whole
 * across router runs and history terms.
 */
import type { Logger } from 'pino';
import type { Registry } from '../router/registry.js';
import type { Chunk } from '../router/router.js';
import type { StreamHub } from '../server/stream.js';
import { deliverChunks, type ChunkSink } from './deliver-batch.js';
import type { BusMessage } from './messages.js';

type Deliver = Extract<BusMessage, { t: 'deliver' }>;
type Stopped = Extract<BusMessage, { t: 'stopped' }>;

export class Deliveries implements ChunkSink {
  /**
   * The numbered batches of each partition's router run, to find one this edge missed
   * (NATS restarted, or the router stopped with batches this edge never got).
   * Then every stream here ends before it is written anything newer, and its
   * client resumes from the last id it got: what was missed comes from the
   * history. A new run (a restarted router, a new leader of the partition, or one that had dropped this edge
   * as silent) starts its own count; what a crashed run never sent, its
   * successor delivers again (subsmanager/sequencer.ts).
   */
  private readonly runs: { id: string; batch: number }[] = [];
  /**
   * The newest sequencer term heard of, per partition (subsmanager/sequencer.ts): a batch of
   * an older one comes from a router that lost the history's lease, late; what
   * it carries the new holder delivered again, and streams skip ids they have.
   */
  private readonly terms: number[] = [];

  constructor(
    private readonly registry: Registry,
    private readonly hub: StreamHub,
    private readonly log: Logger,
  ) {}

  /** A batch from a router: its chunks to the streams, unless it is of an older term; a gap in its run's numbers ends every stream. */
  batch(message: Deliver): void {
    const { partition } = message;
    const p = partition ?? 0;
    if (message.term !== undefined) {
      if (message.term < (this.terms[p] ?? 0)) return void this.log.warn({ partition: p, term: message.term, newest: this.terms[p], run: message.run }, "dropped a batch of an older term of the history's lease");
      this.terms[p] = message.term;
    }
    if (message.run !== undefined && message.batch !== undefined && this.missedBatch(p, message.run, message.batch)) this.resumeAll(`batch ${message.batch} of partition ${p} of router run ${message.run}`);
    deliverChunks(message.chunks, message.topics, partition, this);
  }

  deliver(user: number, chunk: Chunk): void {
    this.registry.deliver(user, chunk);
  }

  deliverTopic(topic: string, users: number[], chunk: Chunk): void {
    this.registry.deliverTopic(topic, users, chunk);
  }

  sent(_chunk: Chunk, at: number): void {
    this.hub.noteSend(at);
  }

  /** A router run stopped cleanly after batch `message.batch`: one this edge never got ends every stream here. */
  stopped(message: Stopped): void {
    const run = this.runs[message.partition ?? 0];
    if (run?.id !== message.run) return;
    if (run.batch !== message.batch) this.resumeAll(`router run ${message.run} stopped after batch ${message.batch}`);
    run.batch = message.batch;
  }

  private missedBatch(partition: number, run: string, batch: number): boolean {
    const last = this.runs[partition];
    if (last?.id !== run) {
      this.runs[partition] = { id: run, batch };
      return false;
    }
    const missed = batch !== last.batch + 1;
    last.batch = batch;
    return missed;
  }

  private resumeAll(why: string): void {
    this.log.warn({ why, streams: this.registry.connections }, 'missed deliveries: every stream ends and resumes from the history');
    this.registry.closeAll();
  }
}
