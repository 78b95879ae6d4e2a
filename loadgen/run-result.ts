/** What a C1M run records, shared by the run (./run.ts) and its report (./report.ts). */
import type { FloodSummary, LatencySummary } from './flood.js';
import type { MsggenSummary } from './msggen.js';

export interface RunOptions {
  /** Streams to open and hold. */
  connections: number;
  /** The friends graph: users x m (Barabási–Albert, mutual). */
  users: number;
  m: number;
  seed: number;
  db: string;
  /** Edge processes; default: what `c1m cluster --connections` sizes from the open-file limit. */
  edges?: number;
  /** Router processes and the partitions of the subjects they share (c1m cluster --routers, --partitions); default 1 and 1. */
  routers?: number;
  partitions?: number;
  /**
   * The brain on JetStream (c1m cluster --replicas): that many clustered nats-servers, and the graph published to the
   * store's stream, each router's view made empty in a directory of the run's own (`db` is not used).
   */
  replicas?: number;
  /** The router's batch window, ms: with many edges, each send touches many of them, and a wider window carries more sends per message to each. */
  batchMs?: number;
  /** The router's message history (c1m cluster --history-seconds, --history-per-subject; 0 seconds: none). */
  historySeconds: number;
  historyPerSubject: number;
  /** Seconds between heartbeats on every stream (c1m cluster --heartbeat; 0: none); default: the cluster's. */
  heartbeat?: number;
  /** Source addresses of the flood, as `c1m loadgen flood --src`. */
  src: string;
  ports: [number, number];
  /** Connects per second during the ramp. */
  rate: number;
  concurrency: number;
  /** Once every stream is open, flood workers read every this many ms instead of being woken by each chunk (0: woken); see FloodOptions. */
  readEveryMs: number;
  /** Streams the flood opens: chunked /test/<id> (default), sse or ws. */
  transport?: 'chunked' | 'sse' | 'ws';
  /** Each stream also listens to one of this many topics (0 or none: none), and `topicShare` of the sends go to a random one of them. */
  topics?: number;
  topicShare?: number;
  /** Seconds to hold every stream before the messages. */
  hold: number;
  /** Seconds of messages (per step with `msgRates`). */
  msgSeconds: number;
  /** Seconds of messages at the first rate before the measured ones (V8 compiles the delivery path in every edge meanwhile); not reported as a step. */
  warmup: number;
  /** One fixed send rate; without it (and without msgRates) the original's generators. */
  msgRate?: number;
  /** Steps of fixed send rates, each for msgSeconds: the highest one sustained at p99 <= 100 ms is reported. */
  msgRates?: number[];
  generators: number;
  sendInterval: [number, number];
  msgConnections: number;
  /** Report folder. */
  out: string;
  /** Hard stop, seconds after the cluster starts (default: 3 x the planned ramp + hold + messages + 180). */
  maxSeconds?: number;
  sampleMs?: number;
  /** Ends the run early; the report is still written, marked interrupted. */
  signal?: AbortSignal;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** Who uses memory and CPU: the cluster's processes, the load generator's, and the kernel. */
export const ROLES = ['edges', 'router', 'nats', 'supervisor', 'floodWorkers', 'runner'] as const;
export type Role = (typeof ROLES)[number];
export const SERVER_ROLES: readonly Role[] = ['edges', 'router', 'nats', 'supervisor'];
export const LOADGEN_ROLES: readonly Role[] = ['floodWorkers', 'runner'];

export type Phase = 'start' | 'ramp' | 'hold' | 'warm-up' | 'messages' | 'stop';

export interface KernelMemory {
  /** MemTotal - MemAvailable, bytes. */
  usedBytes: number;
  slabBytes: number;
  sunreclaimBytes: number;
  /** /proc/net/sockstat TCP mem (pages), in bytes. */
  tcpMemBytes: number;
  tcpInUse: number;
  tcpTimeWait: number;
}

export interface Sample {
  /** Seconds since the run started. */
  t: number;
  phase: Phase;
  /** Streams the flood holds open. */
  open: number;
  /** Streams in the router's directory (/stats), null when it did not answer. */
  serverStreams: number | null;
  welcomed: number;
  closed: number;
  failed: number;
  /** Message chunks the flood received, in all. */
  chunks: number;
  chunksPerSecond: number;
  /** Heartbeats the flood received, in all (not in `chunks`). */
  heartbeats: number;
  /** Sends the router handled, in all, and per second. */
  sends: number | null;
  sendsPerSecond: number;
  processes: Record<Role, number>;
  rss: Record<Role, number>;
  /** Every PSS_EVERY-th sample and the snapshots only: reading it walks each process's page tables (slow for large processes). */
  pss: Record<Role, number> | null;
  /** CPU over the last interval, in cores (1 = one core busy). */
  cpu: Record<Role, number>;
  /** The whole machine (from /proc/stat), in cores; softirq is most of loopback TCP. */
  machineCpu: { busy: number; user: number; system: number; softirq: number };
  kernel: KernelMemory;
  /** Delivery latency of the chunks reported in this interval. */
  delivery: LatencySummary;
}

/** A sample with PSS read: the snapshots. */
export type FullSample = Sample & { pss: Record<Role, number> };

/** PSS is read once in so many samples: ~100 processes at 1M streams would otherwise cost a quarter of a core. */

export interface Step {
  /** Configured sends/s (the generators' expected rate without a fixed rate). */
  rate: number;
  /** Seconds since the run started. */
  start: number;
  msggen: MsggenSummary;
  /** Chunks the flood received for this step (until a settle second after it), per second of sending. */
  deliveredChunksPerSecond: number;
  delivery: LatencySummary;
  /** Achieved >= 95 % of the rate, no API errors, delivery p99 <= 100 ms. */
  sustained: boolean;
}

export interface RunResult {
  status: 'complete' | 'interrupted' | 'failed';
  error?: string;
  startedAt: string;
  seconds: number;
  options: Omit<RunOptions, 'signal' | 'log'>;
  graph?: { rows: number; loaded: boolean; seconds: number };
  cluster?: { edges: number; capacity: number; port: number; apiPort: number; nats: string; startSeconds: number; restarts: number };
  flood?: FloodSummary;
  /** Samples taken before the cluster started, with every stream open (end of the hold), and at the most memory during messages. */
  snapshots: { before?: FullSample; peak?: FullSample; messages?: Sample };
  phases: { phase: Phase; start: number; end: number }[];
  steps: Step[];
  /** The history's files once the cluster stopped, and the messages they keep. */
  history?: { bytes: number; messages: number };
  /** Server-side counters at the end: streams closed as slow consumers. */
  slowConsumerCloses?: number;
  samples: Sample[];
}

/** Delivery p99 at or under this is "sustained". */
export const P99_TARGET_MS = 100;
