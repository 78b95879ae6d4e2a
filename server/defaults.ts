/**
 * The settings that have defaults, each defined here once: start(), the edges
 * and routers of a cluster, and the option table (./options.ts) read them.
 */
export const DEFAULTS = {
  /** Public stream listener. */
  host: '0.0.0.0',
  port: 8000,
  /** Backend API listener: loopback unless told otherwise. */
  apiHost: '127.0.0.1',
  apiPort: 8001,
  /** The SQLite subscription store. */
  db: './data/c1m.db',
  /** Highest user id accepted at /test/<id>. */
  maxUserId: 1_000_000,
  /** Unsent bytes a stream may pile up before it is closed as a slow consumer. */
  maxBacklog: 256 * 1024,
  /** Largest backend API request body. */
  maxBody: 1024 * 1024,
  /** Largest message POST /send accepts (413 above); at most maxBacklog. */
  maxMessage: 64 * 1024,
  /** Streams one user may hold at once (tabs), per process. */
  maxStreamsPerUser: 16,
  /**
   * Seconds of silence after which a stream gets a heartbeat (0: none), at most
   * 1.1 times this apart on an idle one: under the 30 s read timeout of many
   * proxies and clients (60 s for nginx and AWS ALB), as Socket.IO's and
   * Centrifugo's 25 s.
   */
  heartbeatSeconds: 25,
  /** Seconds every message is kept for streams that resume (0: no history, no message ids). */
  historySeconds: 120,
  /** And at most this many messages per sender. */
  historyPerSubject: 1000,
  /** Where edges, routers and `c1m admin` find the bus. */
  nats: 'nats://127.0.0.1:4222',
  /** Streams an edge closes per second while draining. */
  drainRate: 1000,
  /** With --replicas, the store's stream holds at least this many MiB before a snapshot is written (0: none written). */
  snapshotMiB: 16,
  /** A router drops an edge not heard from for this long (ms): three missed statuses (CLUSTER_DEFAULTS.statusMs). */
  edgeTimeoutMs: 3000,
} as const;

/** The shortest batch window of the bus's frequent messages (deliver batches, presence), ms. */
export const MIN_WINDOW_MS = 5;
/**
 * Under load, the frequent messages of N processes (a router's deliver batches
 * to N edges; N edges' presence to a router) wake their receivers at most this
 * often per second in all: every message costs its receiver a wake-up whatever
 * it carries, so many processes share a budget of them (docs/cluster.md
 * says why; docs/benchmarks/2026-11-23-cluster-tuning.md and
 * docs/benchmarks/2026-12-06-million-budget.md have the figures).
 */
export const BUS_WAKEUPS_PER_SECOND = 1000;

/**
 * The server's own store connection waits this long for another process's
 * write lock, then its API call answers 503: better-sqlite3 is synchronous, and
 * every stream of the process stands still while it waits.
 */
export const SERVER_BUSY_TIMEOUT_MS = 50;
