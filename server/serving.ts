/**
 * What the processes that serve each wire the same way, written once: the single process (start()), a cluster's
 * router (its store and backend API) and a cluster's edge (its public streams).
 */
import type { Logger } from 'pino';
import { LatencyHistogram } from '../router/latency.js';
import type { Registry } from '../router/registry.js';
import type { StoreOptions } from '../subsmanager/store.js';
import { apiRoutes } from './api.js';
import { cometRoutes } from './comet.js';
import { DEFAULTS, SERVER_BUSY_TIMEOUT_MS } from './defaults.js';
import { metricsRegistry, type MetricsSnapshot } from './metrics.js';
import type { OptionsOf } from './options.js';
import { StreamHub } from './stream.js';
import type { Uws } from './uws.js';

type Settings<C extends 'server' | 'edge' | 'router', K extends keyof OptionsOf<C>> = Partial<Pick<OptionsOf<C>, K>>;

/** The options of a serving process's own store: its connection waits at most SERVER_BUSY_TIMEOUT_MS for another's write lock. */
export const servingStoreOptions = (o: Settings<'server', 'cacheMiB' | 'mmapMiB' | 'warmCache'>): StoreOptions => ({
  cacheMiB: o.cacheMiB,
  mmapMiB: o.mmapMiB,
  warmCache: o.warmCache,
  busyTimeoutMs: SERVER_BUSY_TIMEOUT_MS,
});

/** The public side: the hub every transport shares, its delivery latencies, and the routes of /test, /sse and /ws. */
export function publicStreams(
  uws: Uws,
  registry: Registry,
  maxConnections: number,
  o: Settings<'edge', 'maxBacklog' | 'heartbeatSeconds' | 'maxUserId' | 'contentType' | 'streamSecret' | 'allowOrigin'>,
) {
  const hub = new StreamHub(registry, o.maxBacklog ?? DEFAULTS.maxBacklog, o.heartbeatSeconds ?? DEFAULTS.heartbeatSeconds);
  const latency = new LatencyHistogram();
  hub.onWritten = latency.observe;
  const app = cometRoutes(uws.App(), hub, { maxUserId: o.maxUserId ?? DEFAULTS.maxUserId, maxStreams: maxConnections, contentType: o.contentType, streamSecret: o.streamSecret, allowOrigin: o.allowOrigin });
  return { hub, latency, app };
}

/** The backend API over the process's send, store and stats, with /metrics read from `metrics`. */
export function backendApi(
  uws: Uws,
  send: Parameters<typeof apiRoutes>[1],
  store: Parameters<typeof apiRoutes>[2],
  stats: () => object,
  metrics: () => MetricsSnapshot,
  o: Settings<'router', 'maxUserId' | 'maxBody' | 'maxMessage' | 'token'>,
) {
  return apiRoutes(uws.App(), send, store, stats, {
    maxUserId: o.maxUserId ?? DEFAULTS.maxUserId,
    maxBody: o.maxBody ?? DEFAULTS.maxBody,
    maxMessage: o.maxMessage ?? DEFAULTS.maxMessage,
    token: o.token,
    metrics: metricsRegistry(metrics),
  });
}

/** Crash-only when another process takes the history's lease: what this one holds in memory could reach streams after the new holder's messages. */
export function exitOnLostLease(log: Logger, context: object, message: string): never {
  log.fatal(context, message);
  process.exit(1);
}
