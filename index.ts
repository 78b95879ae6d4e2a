/**
 * c1m as a library: `const c1m = await start({...}); c1m.router.send(42, 'hello')`.
 * One process holds everything: the comet listener, the backend API, the
 * router and the SQLite subscription store.
 */
import { createServer } from 'node:net';
import { pino, type Logger } from 'pino';
import { Router } from './router/router.js';
import { apiRoutes, checkApiSettings, DEFAULT_MAX_MESSAGE } from './server/api.js';
import { cometRoutes } from './server/comet.js';
import { LatencyHistogram } from './server/latency.js';
import { FdGuard, openFileLimit, RESERVED_FDS } from './server/limits.js';
import { metricsRegistry } from './server/metrics.js';
import { epochMs, StreamHub } from './server/stream.js';
import { listen, listenNow } from './server/listen.js';
import { loadNativeUws, type us_listen_socket } from './server/uws.js';
import { DEFAULT_CACHE_MIB, openStore, type SubscriptionStore } from './subsmanager/store.js';

export { Router, Registry, toChunk, type Connection, type SubscriberSource } from './router/router.js';
export { openStore, SqliteStore, StoreError, type SubscriptionStore } from './subsmanager/store.js';
export { toPairs, isUserId, type Pair } from './subsmanager/pairs.js';

export interface C1mOptions {
  /** Public comet listener. Default 0.0.0.0:8000; port 0 picks a free port. */
  host?: string;
  port?: number;
  /** Backend API listener. Default 127.0.0.1:8001. */
  apiHost?: string;
  apiPort?: number;
  /** SQLite file, or ':memory:'. Default ./data/c1m.db. */
  db?: string;
  /** Or bring your own store (then `db` is ignored and close() leaves it open). */
  store?: SubscriptionStore;
  /** SQLite page cache, MiB. Default 64. */
  cacheMiB?: number;
  /** SQLite memory-mapped window over the store, MiB. Default 0 (off). */
  mmapMiB?: number;
  /** Load the subscriptions table into the page cache at start (see StoreOptions.warmCache). */
  warmCache?: boolean;
  /** Highest user id accepted at /test/<id>. Default 1,000,000. */
  maxUserId?: number;
  /** Unsent bytes a stream may pile up before it is closed as a slow consumer. Default 256 KiB. */
  maxBacklog?: number;
  /** Largest backend API request body. Default 1 MiB. */
  maxBody?: number;
  /** Largest message POST /send accepts (413 above). Default 64 KiB; at most maxBacklog. */
  maxMessage?: number;
  /** Stream content type: 'text' (text/plain, default) or 'html' (the original's text/html). */
  contentType?: 'text' | 'html';
  /** When set, /test/<id> needs a token for that id signed with this secret (`c1m token`). */
  streamSecret?: string;
  /** Allow the API on a non-loopback address without a token. Default false: start() refuses. */
  apiInsecure?: boolean;
  /**
   * Refuse a port another process already listens on (default true). uWS listens
   * with SO_REUSEPORT, so without this check a second server would silently share
   * the port; edges that share it on purpose do not use start().
   */
  exclusivePorts?: boolean;
  /** Streams held at most; default: the open-file limit minus a reserve. */
  maxConnections?: number;
  /** Seconds between heartbeat chunks (an empty line) on every stream; 0 (default): none. */
  heartbeatSeconds?: number;
  /** Streams one user may hold at once (tabs); more get 429. Default 16. */
  maxStreamsPerUser?: number;
  /** Bearer token required on the backend API, if set. */
  token?: string;
  logger?: Logger;
}

export const DEFAULT_MAX_STREAMS_PER_USER = 16;

/**
 * The server's own store connection waits this long for another process's
 * write lock, then its API call answers 503: better-sqlite3 is synchronous, and
 * every stream of the process stands still while it waits.
 */
export const SERVER_BUSY_TIMEOUT_MS = 50;

export interface Stats {
  connections: number;
  users: number;
  maxConnections: number;
  sends: number;
  chunks: number;
  bytes: number;
  slowConsumerCloses: number;
  /** Streams refused for a missing, wrong or expired token. */
  authFailures: number;
  /** Times the process ran out of file descriptors and stopped accepting on the public port for a while. */
  fdExhaustions: number;
  uptimeSeconds: number;
  memory: { rss: number; heapUsed: number; external: number };
}

export interface C1m {
  readonly router: Router;
  readonly store: SubscriptionStore;
  /** Ports actually bound (useful with port 0). */
  readonly port: number;
  readonly apiPort: number;
  stats(): Stats;
  /** Stops listening, ends every stream cleanly and closes the store. */
  close(): void;
}

export { DEFAULT_MAX_MESSAGE };
export const DEFAULT_MAX_BACKLOG = 256 * 1024;

export async function start(options: C1mOptions = {}): Promise<C1m> {
  const host = options.host ?? '0.0.0.0';
  const apiHost = options.apiHost ?? '127.0.0.1';
  const maxMessage = options.maxMessage ?? DEFAULT_MAX_MESSAGE;
  const maxBacklog = options.maxBacklog ?? DEFAULT_MAX_BACKLOG;
  checkApiSettings({ apiHost, token: options.token, apiInsecure: options.apiInsecure, maxMessage, maxBacklog });
  if (options.exclusivePorts ?? true) {
    await assertPortFree(host, options.port ?? 8000, 'comet streams');
    await assertPortFree(apiHost, options.apiPort ?? 8001, 'the backend API');
  }
  const uws = loadNativeUws();
  const log = options.logger ?? pino();
  const maxConnections = options.maxConnections ?? Math.max(1, openFileLimit() - RESERVED_FDS);
  const maxUserId = options.maxUserId ?? 1_000_000;
  const store = options.store ?? openStore(options.db ?? './data/c1m.db', {
      cacheMiB: options.cacheMiB,
      mmapMiB: options.mmapMiB,
      warmCache: options.warmCache,
      busyTimeoutMs: SERVER_BUSY_TIMEOUT_MS,
    });
  const router = new Router(store, options.maxStreamsPerUser ?? DEFAULT_MAX_STREAMS_PER_USER);
  const hub = new StreamHub(router, maxBacklog, options.heartbeatSeconds ?? 0);
  const latency = new LatencyHistogram();
  hub.onWritten = latency.observe;
  const started = Date.now();

  const stats = (): Stats => {
    const memory = process.memoryUsage();
    return {
      connections: router.connections,
      users: router.users,
      maxConnections,
      sends: router.sends,
      chunks: hub.chunks,
      bytes: hub.bytes,
      slowConsumerCloses: hub.slowConsumerCloses,
      authFailures: hub.authFailures,
      fdExhaustions: fds.exhaustions,
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      memory: { rss: memory.rss, heapUsed: memory.heapUsed, external: memory.external },
    };
  };

  const publicApp = cometRoutes(uws.App(), hub, { maxUserId, maxConnections, contentType: options.contentType, streamSecret: options.streamSecret });
  const send = (user: number, message: Uint8Array): number => {
    const at = epochMs();
    const delivered = router.send(user, message);
    hub.noteSend(at);
    return delivered;
  };
  const metrics = metricsRegistry(() => ({ ...stats(), streams: router.connections, latency, edges: [] }));
  const apiApp = apiRoutes(uws.App(), send, store, stats, {
    maxUserId,
    maxBody: options.maxBody ?? 1024 * 1024,
    maxMessage,
    token: options.token,
    metrics,
  });

  let publicListener: us_listen_socket | null = null;
  let apiListener: us_listen_socket | null = null;
  const closeListeners = () => {
    for (const socket of [publicListener, apiListener]) if (socket) uws.us_listen_socket_close(socket);
    publicListener = apiListener = null;
  };
  try {
    publicListener = listen(uws, publicApp, host, options.port ?? 8000, 'comet streams').socket;
    apiListener = listen(uws, apiApp, apiHost, options.apiPort ?? 8001, 'the backend API').socket;
  } catch (err) {
    closeListeners();
    if (!options.store) store.close();
    throw err;
  }
  const [port, apiPort] = [publicListener, apiListener].map((s) => uws.us_socket_local_port(s as never));
  let relistenFailed = false;
  const fds = new FdGuard(
    () => {
      uws.us_listen_socket_close(publicListener!);
      publicListener = null;
      log.warn({ connections: router.connections }, 'out of file descriptors: not accepting on the public port until some are free');
    },
    () => {
      publicListener = listenNow(publicApp, host, port);
      if (publicListener) log.info({ connections: router.connections }, 'accepting on the public port again');
      // The kernel refuses to bind again a port it picked (port 0) while streams hold it; a configured port rebinds.
      else if (!relistenFailed) log.error({ port }, 'cannot listen on the public port again; retrying');
      relistenFailed = publicListener === null;
      return publicListener !== null;
    },
  );
  log.info(
    { port, apiPort, maxConnections, maxUserId, maxMessage, maxBacklog, heartbeatSeconds: options.heartbeatSeconds ?? 0, token: Boolean(options.token), streamAuth: Boolean(options.streamSecret), cacheMiB: options.cacheMiB ?? DEFAULT_CACHE_MIB, mmapMiB: options.mmapMiB ?? 0 },
    'c1m listening',
  );

  return {
    router,
    store,
    port,
    apiPort,
    stats,
    close() {
      fds.close();
      hub.close();
      closeListeners();
      router.closeAll();
      if (!options.store) store.close();
      log.info('c1m closed');
    },
  };
}


/** Fails when another process listens on host:port (a plain bind, without SO_REUSEPORT, is refused then). Port 0 is always free. */
async function assertPortFree(host: string, port: number, what: string): Promise<void> {
  if (port === 0) return;
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen for ${what} on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is already in use' : err.message}`)),
    );
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}
