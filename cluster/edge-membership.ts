/**
 * A router's membership of edges, from what each edge says on its presence
 * subject: presence batches (streams opened and closed), a status every
 * second (alive, with its counters) and snapshots in parts (all it holds), as
 * socket.io keeps its adapter's heartbeat membership apart from its
 * broadcasts. An edge that falls silent is dropped with its streams.
 */
import type { Logger } from 'pino';
import { LatencyHistogram, type LatencyBuckets } from '../router/latency.js';
import type { Registry } from '../router/registry.js';
import type { Bus } from './bus.js';
import { DEFAULTS } from '../server/defaults.js';
import type { DeliverBatcher } from './deliver-batcher.js';
import { EdgeLink } from './edge-link.js';
import { edgeOfPresence, SUBJECTS, type BusMessage, type EdgeStats } from './messages.js';

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

export interface MembershipOptions {
  /** An edge not heard from for this long is dropped with its users (ms). */
  edgeTimeoutMs?: number;
  /** The cluster's partitions, which a request for an edge's state tells it where there are several. */
  partitions: number;
  logger: Logger;
  /** Counts and drops a message that is not ours or not for its subject (see Directory.refuse). */
  refuse: (subject: string, why: string, replyTo: string | undefined) => void;
}

export class EdgeMembership {
  readonly edges = new Map<string, EdgeLink>();
  private readonly watchdog: NodeJS.Timeout;
  private readonly log: Logger;

  constructor(
    private readonly bus: Bus,
    /** The router's registry, where each edge's streams stand as connections. */
    private readonly registry: Registry,
    private readonly batcher: DeliverBatcher,
    private readonly options: MembershipOptions,
  ) {
    this.log = options.logger;
    bus.subscribe(SUBJECTS.anyPresence, this.onEdgeMessage);
    this.watchdog = setInterval(this.dropSilentEdges, 500);
  }

  /**
   * Resolves once the membership is known: at least `minMs` after the start
   * (every live edge has sent a status by then) and every edge heard of has
   * answered with its snapshot, or after `maxMs` whatever the edges did.
   */
  async learned(minMs: number, maxMs: number): Promise<void> {
    const start = performance.now();
    while (performance.now() - start < maxMs) {
      const synced = [...this.edges.values()].every((link) => link.synced || link.down);
      if (performance.now() - start >= minMs && synced) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** A request for an edge's state, which tells it the cluster's partitions where there are several (its streams keep an id per partition). */
  private syncMessage(): BusMessage {
    return this.options.partitions > 1 ? { t: 'sync', partitions: this.options.partitions } : { t: 'sync' };
  }

  /** Asks every edge for its full state (start, NATS reconnect). */
  syncAll(): void {
    this.bus.publish(SUBJECTS.sync, this.syncMessage());
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
  }

  /** What an edge says on its own subject: the edge is the subject's, whatever a body might claim. */
  private readonly onEdgeMessage = (message: BusMessage, _replyTo: string | undefined, subject: string): void => {
    const edge = edgeOfPresence(subject);
    if (edge === undefined || (message.t !== 'presence' && message.t !== 'status' && message.t !== 'state')) return this.options.refuse(subject, `a ${message.t} on ${subject}`, undefined);
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
        return this.snapshotPart(link, message);
    }
  };

  /** One part of an edge's snapshot: the whole replaces what the directory held of the edge once its last part is in. */
  private snapshotPart(link: EdgeLink, message: Extract<BusMessage, { t: 'state' }>): void {
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
  }

  /** The link for this edge run; a new run (restart) replaces the old one and its streams. */
  private linkFor(edge: string, message: Extract<BusMessage, { boot: string }>): EdgeLink {
    let link = this.edges.get(edge);
    if (link && link.boot === message.boot && !link.down) return link;
    if (link) link.clear();
    link = new EdgeLink(edge, message.boot, this.batcher.nextRun(), this.registry, this.batcher);
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
    this.batcher.followEdges(live);
  };
}
