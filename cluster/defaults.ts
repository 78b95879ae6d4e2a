/** The cluster's settings that are no option (the options' defaults are in server/defaults.ts, beside the option table). */
export const CLUSTER_DEFAULTS = {
  /** How often an edge tells the routers it is alive (ms). */
  statusMs: 1000,
} as const;
