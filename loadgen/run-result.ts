/** What a C1M run records, shared by the run (./run.ts) and its report (./report.ts). */
import type { FloodSummary, LatencySummary } from './flood.js';
import type { MsggenSummary } from './msggen.js';
import type { OptionsOf } from '../server/options.js';

/** What `c1m run` may leave to runC1m's defaults (the cluster's, or none: one router, one partition, chunked, no topics). */
type Defaulted = 'routers' | 'partitions' | 'transport' | 'topics' | 'topicShare' | 'heartbeatSeconds';

/** runC1m()'s options: those of `c1m run` under their resolved names (server/options.ts), with the store and the report folder resolved. */
export type RunOptions = Omit<OptionsOf<'run'>, Defaulted | 'db' | 'out'> &
  Partial<Pick<OptionsOf<'run'>, Defaulted>> & {
    db: string;
    out: string;
    /** How often the sampler reads /proc, ms (default 1000). */
    sampleMs?: number;
    /** Ends the run early; the report is still written, marked interrupted. */
    signal?: AbortSignal;
    /** Progress lines (default: stderr). */
    log?: (line: string) => void;
  };

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
