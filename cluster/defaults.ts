/** The cluster's settings that have defaults, each defined here once (the command line shows them). */
export const CLUSTER_DEFAULTS = {
  /** Where edges, routers and `c1m admin` find the bus. */
  nats: 'nats://127.0.0.1:4222',
  /** Streams an edge closes per second while draining. */
  drainRate: 1000,
  /** How often an edge tells the routers it is alive (ms). */
  statusMs: 1000,
  /** A router drops an edge not heard from for this long (ms): three missed statuses. */
  edgeTimeoutMs: 3000,
} as const;
