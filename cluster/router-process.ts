/**
 * A router process of the cluster: the backend API and the subscription
 * store, routing over the bus to the edges. Several may run against one
 * SQLite file, each keeping the full directory; with --replicas, each applies
 * the store's stream to a file of its own (store-log.ts). Without a history, sends over
 * the bus go to one of them (a queue group), and HTTP sends to whichever the
 * kernel picks (they share the API port). With one, the router holding the
 * history's lease takes every send and replay, and the others stand by with
 * their API closed until one takes the lease over. With several partitions
 * (subsmanager/partitions.ts), each partition has its history and lease, and
 * the routers share them: each leads those whose lease it holds, and passes
 * a send of another partition to that partition's leader.
 */
import type { Logger } from 'pino';
import { checkIdempotencyKey, checkSend, sendOnce, type Sent } from '../router/router.js';
import { checkApiSettings } from '../server/api.js';
import { HttpError } from '../server/http.js';
import { DEFAULTS } from '../server/defaults.js';
import { listen } from '../server/listener.js';
import type { SharedStats } from '../server/server.js';
import type { OptionsOf } from '../server/options.js';
import { backendApi, exitOnLostLease, servingStoreOptions } from '../server/serving.js';
import { sumTransportStats } from '../server/stream.js';
import { loadNativeUws } from '../server/uws.js';
import { checkPartitions, partitionOf } from '../subsmanager/partitions.js';
import { LEASE } from '../subsmanager/sequencer.js';
import { openStore } from '../subsmanager/store.js';
import { connectJetStream } from './jetstream.js';
import { openReplicatedStore, type StoreLogStats } from './store-log.js';
import { SnapshotWriter } from './store-snapshot-auto.js';
import type { Subject } from '../subsmanager/subjects.js';
import type { History, HistoryStats, MessageHistory } from '../subsmanager/history.js';
import { CLUSTER_DEFAULTS } from './defaults.js';
import { Directory } from './directory.js';
import type { EdgeView } from './edge-membership.js';
import { SUBJECTS } from './messages.js';
import { ROUTER_INBOX } from './nats-auth.js';
import { NatsBus } from './nats-bus.js';
import { Brain, ReplicatedHistory } from './replicated-history.js';

/** How long a send passed to its partition's leader waits for the answer (a hand-over takes up to the lease's 2 s). */
const FORWARD_TIMEOUT_MS = 5000;

/**
 * startRouterProcess()'s options: those of `c1m router` under their resolved names (server/options.ts), every one
 * optional but the bus and the store, with the bus's credentials as NatsBus takes them.
 */
export type RouterProcessOptions = Partial<Omit<OptionsOf<'router'>, 'nats' | 'db' | 'natsCreds' | 'natsCa' | 'busInsecure' | 'statsInterval' | 'logLevel'>> &
  Pick<OptionsOf<'router'>, 'nats' | 'db'> & {
    /** The router's bus credentials file and the CA file for a TLS bus (see NatsBusOptions). */
    creds?: string;
    ca?: string;
    logger: Logger;
  };

export async function startRouterProcess(options: RouterProcessOptions) {
  const settings = routerSettings(options);
  const uws = loadNativeUws();
  const log = options.logger;
  const kept = await openStoreAndHistories(options, settings);
  const started = Date.now();
  const { bus, directory } = await openDirectory(options, settings, kept);
  const wiring: Wiring = { options, settings, kept, bus, directory, log };
  let closing = false;
  let leadership: Leadership | undefined;
  const stats = routerStats(wiring, started, () => leadership?.handedOver ?? 0);
  const metrics = () => {
    const s = stats();
    return { ...s, streams: s.connections, latency: directory.latency() };
  };
  const api = backendApi(uws, routerSend(wiring, () => closing), kept.store, stats, metrics, options);
  // Sends are taken once the directory knows who is connected: before, they would reach nobody, acknowledged.
  directory.syncAll();
  await directory.learned(CLUSTER_DEFAULTS.statusMs + 500, 5000);
  let listener: ReturnType<typeof listen> | undefined;
  // At info whatever the log level: the supervisor waits for one of these lines.
  const ready = log.child({}, { level: 'info' });
  const open = (term?: number): void => {
    if (listener) return;
    listener = listen(uws, api, settings.apiHost, options.apiPort ?? DEFAULTS.apiPort, 'the backend API');
    ready.info({ apiPort: listener.port, nats: bus.server, db: options.db, pid: process.pid, term }, 'c1m router listening');
  };
  try {
    if (kept.histories.length === 0) {
      directory.takeOver();
      open();
    } else {
      leadership = new Leadership(wiring, open);
      await leadership.start();
      if (!listener) ready.info({ pid: process.pid, holder: await leadership.holder() }, 'c1m router standing by: another holds the history');
    }
  } catch (err) {
    directory.close();
    await bus.close();
    await kept.close();
    throw err;
  }
  const snapshots = snapshotWriter(wiring);

  return {
    directory,
    store: kept.store,
    get apiPort() {
      return listener?.port;
    },
    stats,
    async close() {
      closing = true;
      leadership?.stop();
      await snapshots?.stop();
      if (listener) uws.us_listen_socket_close(listener.socket);
      // The last batches leave once the stream holds their messages.
      await Promise.all((kept.replicated ?? []).map((history) => history.settled()));
      directory.close();
      await bus.close();
      await kept.close();
      log.info('c1m router stopped');
    },
  };
}

/** startRouterProcess()'s options checked, with their defaults. */
function routerSettings(options: RouterProcessOptions) {
  const apiHost = options.apiHost ?? DEFAULTS.apiHost;
  const maxMessage = options.maxMessage ?? DEFAULTS.maxMessage;
  const maxUserId = options.maxUserId ?? DEFAULTS.maxUserId;
  checkApiSettings({ apiHost, token: options.token, apiInsecure: options.apiInsecure, maxMessage, maxBacklog: options.maxBacklog ?? DEFAULTS.maxBacklog });
  const historySeconds = options.historySeconds ?? DEFAULTS.historySeconds;
  const partitions = checkPartitions(options.partitions ?? 1);
  if (partitions > 1 && historySeconds === 0) throw new Error('--partitions share the numbering of sends among routers: they need a history (--history-seconds above 0)');
  const replicas = options.replicas;
  if (replicas !== undefined && (!Number.isSafeInteger(replicas) || replicas < 1)) throw new Error(`--replicas ${replicas}: a whole number of at least 1`);
  return { apiHost, maxMessage, maxUserId, historySeconds, partitions, replicas };
}

/**
 * With --replicas and a history, whichever router leads partition 0 writes the store's snapshots (one router at a
 * time; without a history no router leads, and none writes them).
 */
function snapshotWriter({ options, settings, kept, directory, log }: Wiring): SnapshotWriter | undefined {
  const mib = options.snapshotMiB ?? DEFAULTS.snapshotMiB;
  if (!kept.jetStream || settings.historySeconds === 0 || mib === 0) return undefined;
  return new SnapshotWriter(kept.jetStream, { db: options.db, floorBytes: mib * 2 ** 20, leads: () => directory.leads(0), logger: log });
}

/** What the steps of startRouterProcess() share. */
interface Wiring {
  options: RouterProcessOptions;
  settings: ReturnType<typeof routerSettings>;
  kept: Awaited<ReturnType<typeof openStoreAndHistories>>;
  bus: NatsBus;
  directory: Directory;
  log: Logger;
}

/**
 * The store and each partition's history: SQLite files, or with --replicas each a view of its JetStream stream, caught
 * up before anything else starts. `logs` are what the directory numbers with; close() closes them all.
 */
async function openStoreAndHistories(options: RouterProcessOptions, settings: Wiring['settings']) {
  const { historySeconds, partitions, replicas } = settings;
  const storeOptions = servingStoreOptions(options);
  // Replicated: this router's store is its own view of the store's stream, caught up before anything else starts.
  const jetStream = replicas ? await connectJetStream(options.nats, { name: `c1m-router-${process.pid}-js`, creds: options.creds, ca: options.ca, inboxPrefix: ROUTER_INBOX }) : undefined;
  const store = jetStream
    ? await openReplicatedStore(jetStream, { db: options.db, storeOptions, replicas, logger: options.logger }).catch(async (err: Error) => {
        await jetStream.close();
        throw err;
      })
    : openStore(options.db, storeOptions);
  const histories: History[] = [];
  /** With --replicas, each partition's stream, over its view in `histories`. */
  let replicated: ReplicatedHistory[] | undefined;
  const close = async () => {
    for (const history of replicated ?? []) await history.close();
    for (const history of histories) history.close();
    await store.close();
    await jetStream?.close();
  };
  try {
    for (let partition = 0; historySeconds > 0 && partition < partitions; partition++) {
      histories.push(store.history({ seconds: historySeconds, perSubject: options.historyPerSubject ?? DEFAULTS.historyPerSubject, partition, partitions, replicated: replicas !== undefined }));
    }
    // With no history (--history-seconds 0), only the store is replicated.
    if (jetStream && replicas !== undefined && histories.length > 0) {
      const brain = await Brain.on(jetStream, { replicas, partitions, historySeconds });
      // Every view current before this router leads anything: one whose data dir was empty is rebuilt here.
      replicated = await Promise.all(histories.map((view, partition) => ReplicatedHistory.open(brain, view, partition)));
    }
  } catch (err) {
    await close();
    throw err;
  }
  const logs: MessageHistory[] = replicated ?? histories;
  return { store, histories, replicated, logs, jetStream, close };
}

/** The bus, and the directory over it of who is connected on which edge. */
async function openDirectory(options: RouterProcessOptions, settings: Wiring['settings'], kept: Wiring['kept']) {
  const log = options.logger;
  let directory: Directory | undefined;
  const bus = await NatsBus.connect(options.nats, { name: `c1m-router-${process.pid}`, creds: options.creds, ca: options.ca, inboxPrefix: ROUTER_INBOX }, {
    // Presence may have been lost while NATS was away: rebuild the directory.
    reconnected: () => {
      log.warn('reconnected to NATS; resyncing the directory');
      directory?.syncAll();
    },
    malformed: (subject, err, replyTo) => directory?.refuse(subject, err.message, replyTo),
    warning: (message) => log.warn(message),
  });
  try {
    const { maxMessage, maxUserId } = settings;
    directory = new Directory(bus, kept.store, { batchMs: options.batchMs, edgeTimeoutMs: options.edgeTimeoutMs, maxMessage, maxUserId, histories: kept.logs, logger: log });
  } catch (err) {
    await bus.close();
    await kept.close();
    throw err;
  }
  return { bus, directory };
}

/** The router's GET /stats. */
function routerStats({ directory, kept, settings }: Wiring, started: number, handedOver: () => number) {
  const { router, registry } = directory;
  const { store, logs } = kept;
  const { partitions } = settings;
  return (): RouterStats => {
    const edges = directory.edgeViews();
    const up = edges.filter((e) => e.state !== 'down');
    const sum = (pick: (e: (typeof edges)[number]) => number) => edges.reduce((n, e) => n + pick(e), 0);
    const memory = process.memoryUsage();
    return {
      role: 'router',
      pid: process.pid,
      // The directory's streams: the router's registry holds one entry per user and edge, not per stream.
      connections: sum((e) => e.directoryStreams),
      users: registry.users,
      maxConnections: up.reduce((n, e) => n + e.capacity, 0),
      sends: router.sends,
      passed: directory.passed,
      kinds: router.kinds(),
      chunks: sum((e) => e.chunks),
      bytes: sum((e) => e.bytes),
      slowConsumerCloses: sum((e) => e.slowConsumerCloses),
      transports: sumTransportStats(edges.map((e) => e.transports)),
      batchWindowMs: directory.batchWindowMs,
      busMalformed: directory.malformed,
      history: partitions === 1 && logs.length > 0 ? logs[0].stats() : null,
      ...('stats' in store && { store: store.stats() }),
      ...(partitions > 1 && { partitions: logs.map((history, partition) => ({ partition, leading: directory.leads(partition), ...history.stats() })), handedOver: handedOver() }),
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      memory: { rss: memory.rss, heapUsed: memory.heapUsed, external: memory.external },
      edges,
    };
  };
}

/** The backend API's send: taken here where this router leads the subject's partition, else passed to that partition's leader. */
function routerSend({ directory, kept, settings, bus }: Wiring, closing: () => boolean) {
  const { maxUserId, maxMessage, partitions } = settings;
  /** A send of a partition another router leads, passed to it over the bus; checked here first, so that a bad one gets its HTTP status. */
  const forward = async (subject: Subject, message: Uint8Array, partition: number, key?: string): Promise<Sent> => {
    checkSend(subject, message, { maxUserId, maxMessage });
    if (key !== undefined) checkIdempotencyKey(key);
    directory.passed++;
    const reply = await bus.request(SUBJECTS.sendIn(partition), { t: 'send', user: subject, message, ...(key !== undefined && { key }) }, FORWARD_TIMEOUT_MS).catch((err: Error) => {
      throw new HttpError(503, `partition ${partition}'s leader did not answer (${err.message}): try again`);
    });
    if (reply.t !== 'sent') throw new HttpError(502, `partition ${partition}'s leader answered a ${reply.t}`);
    if (reply.error !== undefined) throw new HttpError(503, reply.error);
    return { delivered: reply.delivered, id: reply.id, ...(reply.duplicate && { duplicate: true }) };
  };
  return (subject: Subject, message: Uint8Array, key?: string): Sent | Promise<Sent> => {
    // Not taken once stopping: its delivery could not leave any more.
    if (closing()) throw new HttpError(503, 'the router is stopping');
    const partition = partitionOf(subject, partitions);
    if (!directory.leads(partition)) return forward(subject, message, partition, key);
    return sendOnce(directory.router, kept.logs[partition], subject, key, () => directory.send(subject, message, key));
  };
}

/**
 * With a history, one router at a time numbers and delivers each partition (subsmanager/sequencer.ts): this one claims
 * partitions whose lease is free, one per lease period, stands by for the others, and hands one over to a router that
 * leads fewer. It exits when a lease it held is taken.
 */
class Leadership {
  /** Partitions this router handed over to one that led fewer (a router back after a restart). */
  handedOver = 0;
  /** Who takes each partition: its SQLite history (a lease row in its file) or its replicated stream (a KV lease, fenced by the stream). */
  private readonly leaders: (History | ReplicatedHistory)[];
  /** The other routers heard on c1m.routers within a lease period, and how many partitions each leads. */
  private readonly peers = new Map<string, { leads: number; at: number }>();
  private claimedAt = -Infinity;
  private handedAt = -Infinity;
  private claiming = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly w: Wiring,
    /** Opens the API, at the first partition this router leads. */
    private readonly open: (term: number) => void,
  ) {
    this.leaders = w.kept.replicated ?? w.kept.histories;
    this.watchLeases();
  }

  /** Claims a first partition if it can, then looks again every lease poll. */
  async start(): Promise<void> {
    const { partitions } = this.w.settings;
    const { bus, directory } = this.w;
    const me = this.leaders[0].lease.holder;
    if (partitions > 1) bus.subscribe(SUBJECTS.routers, (message) => {
      if (message.t === 'leading' && message.router !== me) this.peers.set(message.router, { leads: message.partitions, at: performance.now() });
    });
    await this.claim();
    if (partitions > 1) this.timer = setInterval(() => {
      this.share();
      void this.claim();
    }, LEASE.pollMs);
    else if (!directory.leads(0)) this.timer = setInterval(() => {
      void this.claim().then(() => {
        if (directory.leads(0)) clearInterval(this.timer);
      });
    }, LEASE.pollMs);
  }

  /** Who holds the first partition's lease. */
  holder() {
    return this.leaders[0].lease.current();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /** A partition whose stream stopped acknowledging is handed over; a lease taken by another router ends this one. */
  private watchLeases(): void {
    const { directory, log } = this.w;
    this.w.kept.replicated?.forEach((history, partition) => {
      history.onStepDown = (why) => {
        log.warn({ partition, why }, 'stopped leading a partition: its stream did not acknowledge a message');
        directory.handOver(partition);
      };
    });
    this.leaders.forEach((history, partition) => {
      history.onLeaseLost = (why?: string) =>
        history instanceof ReplicatedHistory
          ? exitOnLostLease(log, { partition, why }, "the partition's stream refused this router, or its lease was taken: exiting")
          : exitOnLostLease(log, { partition, holder: history.lease.current() }, "another router took the history's lease: exiting");
    });
  }

  /** Takes the first partition nobody leads, if any. */
  private async claim(): Promise<void> {
    const { directory, log, settings } = this.w;
    // One more partition per lease period at most: routers that start together take one each, not one all of them.
    // Nor one this router just handed over: it is for the router that leads fewer to take.
    if (this.claiming || this.stopped || performance.now() - Math.max(this.claimedAt, this.handedAt) < LEASE.ms) return;
    this.claiming = true;
    try {
      for (const [partition, history] of this.leaders.entries()) {
        if (directory.leads(partition)) continue;
        const term = await history.claimLease();
        if (!term || this.stopped) continue;
        this.claimedAt = performance.now();
        directory.takeOver(partition, term.term, history.newerThan(term.settled));
        this.open(term.term);
        if (settings.partitions > 1) log.info({ partition, term: term.term }, 'leading a partition');
        return;
      }
    } catch (err) {
      // A replicated partition's stream refused the term marker (another router numbered meanwhile) or was away: tried again at the next look.
      if (!this.w.kept.replicated) throw err;
      log.warn({ err: (err as Error).message }, 'could not take a partition: trying again');
    } finally {
      this.claiming = false;
    }
  }

  /**
   * A router that came back finds every partition led: one that leads more than its share (the partitions over
   * the live routers, rounded up), where another leads less, hands one over at a clean point (History.handOver).
   */
  private share(): void {
    const { bus, directory, log, settings } = this.w;
    const now = performance.now();
    for (const [id, peer] of this.peers) if (now - peer.at > LEASE.ms) this.peers.delete(id);
    const led = this.leaders.filter((_, partition) => directory.leads(partition)).length;
    bus.publish(SUBJECTS.routers, { t: 'leading', router: this.leaders[0].lease.holder, partitions: led });
    const fair = Math.ceil(settings.partitions / (this.peers.size + 1));
    if (led <= fair || ![...this.peers.values()].some((peer) => peer.leads < fair) || now - this.handedAt < 2 * LEASE.ms) return;
    let partition = settings.partitions - 1;
    while (!directory.leads(partition)) partition--;
    if (!this.leaders[partition].handOver()) return;
    directory.handOver(partition);
    this.handedAt = now;
    this.handedOver++;
    log.info({ partition, routers: this.peers.size + 1 }, 'handed a partition over to a router that leads fewer');
  }
}

/** A router's GET /stats: what a single server answers too (SharedStats), and the cluster's own counters. */
export interface RouterStats extends SharedStats {
  role: 'router';
  pid: number;
  /** Sends passed to the router leading their partition (Directory.passed). */
  passed: number;
  batchWindowMs: number;
  /** Bus messages refused as malformed. */
  busMalformed: number;
  /** With --replicas: this router's view of the store's stream. */
  store?: StoreLogStats;
  /** With --partitions above 1: each partition's history and whether this router leads it; with --replicas, its stream too. */
  partitions?: (HistoryStats & { partition: number; leading: boolean; replicas?: number; streamLast?: number; lag?: number })[];
  /** With --partitions above 1: partitions this router handed over to one that led fewer. */
  handedOver?: number;
  edges: EdgeView[];
}
