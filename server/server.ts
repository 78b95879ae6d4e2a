/**
 * The single process, c1m's default: the comet listener, the backend API, the
 * router and the SQLite subscription store together, no other service needed.
 * `const c1m = await start({...}); c1m.router.send(42, 'hello')`.
 */
import { pino, type Logger } from 'pino';
import { epochMs } from '../router/latency.js';
import { Registry } from '../router/registry.js';
import { Router, sendOnce, type KindCounts } from '../router/router.js';
import { DEFAULT_CACHE_MIB } from '../subsmanager/defaults.js';
import { NotSequencerError, type History, type HistoryStats } from '../subsmanager/history.js';
import { paced } from '../subsmanager/pacer.js';
import { LEASE } from '../subsmanager/sequencer.js';
import { openStore, type SubscriptionStore } from '../subsmanager/store.js';
import type { Subject } from '../subsmanager/subjects.js';
import { checkApiSettings } from './api.js';
import { checkStreamSecret } from './auth.js';
import { checkAllowOrigin } from './cors.js';
import { DEFAULTS } from './defaults.js';
import { streamCapacity } from './limits.js';
import { assertPortFree, listen, PublicListener } from './listener.js';
import type { OptionsOf } from './options.js';
import type { After } from './resume.js';
import { backendApi, exitOnLostLease, publicStreams, servingStoreOptions } from './serving.js';
import { StreamHub, transportStats, type TransportStats } from './stream.js';
import { loadNativeUws, type TemplatedApp, type Uws } from './uws.js';

/**
 * start()'s options: those of `c1m server` under their resolved names (server/options.ts has each one's help and
 * default; docs/options.md lists them), every one optional, and what only a program that embeds c1m gives.
 */
export type C1mOptions = Partial<Omit<OptionsOf<'server'>, 'logLevel' | 'statsInterval' | 'demo'>> & {
  /** Or bring your own store (then `db` is ignored and close() leaves it open). */
  store?: SubscriptionStore;
  /**
   * Refuse a port another process already listens on (default true). uWS listens
   * with SO_REUSEPORT, so without this check a second server would silently share
   * the port; edges that share it on purpose do not use start().
   */
  exclusivePorts?: boolean;
  logger?: Logger;
};

export interface Stats {
  /** Streams open now, as the registry holds them (a resuming one by its holder): `connections`, as /stats always named them. */
  connections: number;
  users: number;
  /** Streams held at most (`--max-connections`). */
  maxConnections: number;
  sends: number;
  /** Sends and the streams they reached, by kind of subject (`user`, `photo`…; bounded, see Router.kinds). */
  kinds: Record<string, KindCounts>;
  chunks: number;
  bytes: number;
  slowConsumerCloses: number;
  /** Streams refused for a missing, wrong or expired token. */
  authFailures: number;
  /** The same counters per transport (chunked /test, EventSource /sse, WebSocket /ws), with the streams open on each. */
  transports: TransportStats;
  /** Times the process ran out of file descriptors and stopped accepting on the public port for a while. */
  fdExhaustions: number;
  /** Streams that resumed, the messages replayed to them, and those told their history is lost; null without history. */
  history: HistoryStats | null;
  uptimeSeconds: number;
  memory: { rss: number; heapUsed: number; external: number };
}

/** What /stats answers on a single server and on a cluster's router alike (a router adds its own: cluster/router-process.ts RouterStats). */
export type SharedStats = Omit<Stats, 'authFailures' | 'fdExhaustions'>;

export interface C1m {
  readonly router: Router;
  /** Who is connected here: the router's registry of local streams. */
  readonly registry: Registry;
  /** The streams every transport shares (its replay may be wrapped: tests of the resume hand-over). */
  readonly hub: StreamHub;
  readonly store: SubscriptionStore;
  /** Ports actually bound (useful with port 0). */
  readonly port: number;
  readonly apiPort: number;
  stats(): Stats;
  /** Stops listening, ends every stream cleanly and closes the store. */
  close(): void;
}

/**
 * One process numbers a store's messages at a time (subsmanager/sequencer.ts).
 * A server started again right after a kill -9 finds its predecessor's lease
 * still running for a moment, and waits it out; another live holder is an error.
 */
async function claimHistoryLease(history: History): Promise<void> {
  const deadline = Date.now() + LEASE.ms + 1000;
  while (!history.claimLease()) {
    if (Date.now() > deadline) throw new NotSequencerError(history.lease.current());
    await new Promise((resolve) => setTimeout(resolve, LEASE.pollMs));
  }
}

/** The store's message history, with this process holding its lease; none with historySeconds 0. On failure, closes the store if it is start()'s own. */
async function leasedHistory(store: SubscriptionStore, historySeconds: number, options: C1mOptions, log: Logger): Promise<History | undefined> {
  if (historySeconds <= 0) return undefined;
  if (!store.history) {
    if (!options.store) store.close();
    throw new Error('message history needs a store that keeps one (the SQLite store): set historySeconds to 0');
  }
  const history = store.history({ seconds: historySeconds, perSubject: options.historyPerSubject ?? DEFAULTS.historyPerSubject });
  try {
    await claimHistoryLease(history);
  } catch (err) {
    history.close();
    if (!options.store) store.close();
    throw err;
  }
  history.onLeaseLost = () => exitOnLostLease(log, { holder: history.lease.current() }, "another process took this store's history: exiting");
  return history;
}

export async function start(options: C1mOptions = {}): Promise<C1m> {
  const settings = await checkServerSettings(options);
  const uws = loadNativeUws();
  const log = options.logger ?? pino();
  const maxConnections = options.maxConnections ?? streamCapacity();
  const maxUserId = options.maxUserId ?? DEFAULTS.maxUserId;
  const store = options.store ?? openStore(options.db ?? DEFAULTS.db, servingStoreOptions(options));
  const historySeconds = options.historySeconds ?? DEFAULTS.historySeconds;
  const history = await leasedHistory(store, historySeconds, options, log);
  const registry = new Registry(options.maxStreamsPerUser ?? DEFAULTS.maxStreamsPerUser);
  const router = new Router(registry, store, { maxUserId, maxMessage: settings.maxMessage }, history);
  const { hub, latency, app: publicApp } = publicStreams(uws, registry, maxConnections, options);
  let listeners: ReturnType<typeof listenBoth> | undefined;
  const stats = serverStats({ registry, router, hub, history, maxConnections }, () => listeners!.publicListener.fds.exhaustions);

  const send = (subject: Subject, message: Uint8Array, key?: string) =>
    sendOnce(router, history, subject, key, () => {
      const at = epochMs();
      const delivered = router.send(subject, message, key);
      hub.noteSend(at);
      return delivered;
    });
  // One process has one partition: a token of several is one this store never gave.
  hub.replay = history ? paced((user: number, after: After | undefined, budget: number, topics: readonly string[]) => history.replay(user, typeof after === 'number' ? after : -1, budget, topics)) : undefined;
  const apiApp = backendApi(uws, send, store, stats, () => ({ ...stats(), streams: registry.connections, latency, edges: [] }), options);

  try {
    listeners = listenBoth(uws, publicApp, apiApp, settings, options, log, () => registry.connections);
  } catch (err) {
    history?.close();
    if (!options.store) store.close();
    throw err;
  }
  const { publicListener, api } = listeners;
  const { port } = publicListener;
  const apiPort = api.port;
  const { maxMessage, maxBacklog } = settings;
  log.info(
    { port, apiPort, maxConnections, maxUserId, maxMessage, maxBacklog, historySeconds, heartbeatSeconds: options.heartbeatSeconds ?? DEFAULTS.heartbeatSeconds, token: Boolean(options.token), streamAuth: options.streamSecret !== undefined, cacheMiB: options.cacheMiB ?? DEFAULT_CACHE_MIB, mmapMiB: options.mmapMiB ?? 0 },
    'c1m listening',
  );

  let closed = false;
  return {
    router,
    registry,
    hub,
    store,
    port,
    apiPort,
    stats,
    close() {
      // Idempotent: uWS aborts the process when a listen socket is closed twice.
      if (closed) return;
      closed = true;
      publicListener.close();
      uws.us_listen_socket_close(api.socket);
      hub.close();
      registry.closeAll();
      history?.close();
      if (!options.store) store.close();
      log.info('c1m closed');
    },
  };
}

/** start()'s settings checked, its ports free unless told otherwise (exclusivePorts), with their defaults. */
async function checkServerSettings(options: C1mOptions) {
  const host = options.host ?? DEFAULTS.host;
  const apiHost = options.apiHost ?? DEFAULTS.apiHost;
  const maxMessage = options.maxMessage ?? DEFAULTS.maxMessage;
  const maxBacklog = options.maxBacklog ?? DEFAULTS.maxBacklog;
  checkApiSettings({ apiHost, token: options.token, apiInsecure: options.apiInsecure, maxMessage, maxBacklog });
  checkStreamSecret(options.streamSecret);
  checkAllowOrigin(options.allowOrigin ?? []);
  if (options.exclusivePorts ?? true) {
    await assertPortFree(host, options.port ?? DEFAULTS.port, 'comet streams');
    await assertPortFree(apiHost, options.apiPort ?? DEFAULTS.apiPort, 'the backend API');
  }
  return { host, apiHost, maxMessage, maxBacklog };
}

/** The single server's GET /stats. */
function serverStats(parts: { registry: Registry; router: Router; hub: StreamHub; history: History | undefined; maxConnections: number }, fdExhaustions: () => number) {
  const { registry, router, hub, history, maxConnections } = parts;
  const started = Date.now();
  return (): Stats => {
    const memory = process.memoryUsage();
    return {
      connections: registry.connections,
      users: registry.users,
      maxConnections,
      sends: router.sends,
      kinds: router.kinds(),
      chunks: hub.chunks,
      bytes: hub.bytes,
      slowConsumerCloses: hub.slowConsumerCloses,
      authFailures: hub.authFailures,
      transports: transportStats(hub),
      fdExhaustions: fdExhaustions(),
      history: history ? history.stats() : null,
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      memory: { rss: memory.rss, heapUsed: memory.heapUsed, external: memory.external },
    };
  };
}

/** The public listener and the backend API's; if the second cannot listen, the first is closed again. */
function listenBoth(
  uws: Uws,
  publicApp: TemplatedApp,
  apiApp: TemplatedApp,
  settings: Awaited<ReturnType<typeof checkServerSettings>>,
  options: C1mOptions,
  log: Logger,
  streams: () => number,
) {
  const publicListener = new PublicListener(uws, publicApp, settings.host, options.port ?? DEFAULTS.port, 'comet streams', log, streams);
  try {
    return { publicListener, api: listen(uws, apiApp, settings.apiHost, options.apiPort ?? DEFAULTS.apiPort, 'the backend API') };
  } catch (err) {
    publicListener.close();
    throw err;
  }
}
