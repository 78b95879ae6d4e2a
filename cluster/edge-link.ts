/**
 * What a router knows of one edge: the streams it holds, by user and topic, as
 * entries of the router's registry (kept by ./edge-membership.ts from the
 * edge's presence and snapshots), and the batches waiting to go to it
 * (filled and sent by ./deliver-batcher.ts).
 */
import type { LatencyBuckets } from '../router/latency.js';
import type { Connection, Registry } from '../router/registry.js';
import type { Chunk } from '../router/router.js';
import type { Subject } from '../subsmanager/subjects.js';
import type { EdgeStats } from './messages.js';

/** Where the chunks for a link's streams go: the batch of its edge. */
export interface ChunkQueue {
  queue(link: EdgeLink, target: Subject, chunk: Chunk): void;
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
    this.link.batcher.queue(this.link, this.target, chunk);
    return this.count;
  }
  /** The edge owns the sockets; a router shutting down leaves them open. */
  close(): void {}
}

/** One partition's deliveries to one edge, waiting for the window to close. */
export class Batch {
  chunks: Uint8Array[] = [];
  targets: Subject[][] = [];
  sentAt: number[] = [];
  /** Each chunk's message id, where the router keeps a history. */
  ids: number[] = [];
  bytes = 0;
  /** Batches of this partition sent to this edge by this link (numbered where there are ids, see BusMessage 'deliver'). */
  sent = 0;
}

export class EdgeLink {
  /** Users' streams, and topics' listeners (not counted in streamCount), on this edge. */
  private readonly streams = new Map<Subject, EdgeStreams>();
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

  constructor(
    readonly id: string,
    /** The edge's run (a restarted edge keeps its id, not its boot). */
    readonly boot: string,
    /** This link's count of batches: the router's run, and this link's place in it (a link made again after the edge was dropped counts anew). */
    readonly run: string,
    private readonly registry: Registry,
    readonly batcher: ChunkQueue,
  ) {}

  add(subject: Subject): void {
    let held = this.streams.get(subject);
    if (!held) {
      held = new EdgeStreams(subject, this);
      this.streams.set(subject, held);
      if (typeof subject === 'number') this.registry.login(held);
      else this.registry.listen(subject, held);
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
    if (typeof held.target === 'number') this.registry.logout(held);
    else this.registry.unlisten(held.target, held);
  }

  clear(): void {
    for (const held of this.streams.values()) this.release(held);
    this.streams.clear();
    this.streamCount = 0;
  }
}
