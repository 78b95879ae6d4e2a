/**
 * `c1m loadgen flood`: opens many long-lived streams (chunked GET /test/<id>,
 * EventSource /sse/<id> or WebSocket /ws/<id>), each from its own source
 * address and explicit local port, and holds them.
 *
 * The sockets live in C worker processes (loadgen/flood.c, built to
 * dist/loadgen/flood-worker): each holds at most what the open-file limit
 * allows, for a few dozen bytes of state per connection and a fraction of
 * the CPU per connect that Node's net sockets take. This module plans the
 * work, starts the workers, merges what they print and summarizes.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { isIPv4 } from 'node:net';
import { setPriority } from 'node:os';
import type * as Hdr from 'hdr-histogram-js';
import { createRequire } from 'node:module';
import { openFileLimit } from '../server/limits.js';
import { parseIdRange } from '../server/options.js';

/** The compiled worker: next to this module in dist/, or in dist/ when this runs from source (under vitest). */
export const FLOOD_WORKER = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../dist/loadgen/flood-worker' : './flood-worker', import.meta.url));

export const WORKER_NICE = 5;

/** Descriptors a worker keeps besides its sockets: stdio, epoll, /proc reads. */
const WORKER_RESERVED_FDS = 32;

/** The topic stream `id` listens to in a flood of `topics` topics (flood.c builds the same ?topics=), and msggen's topic `id` for a random id. */
export const floodTopic = (id: number, topics: number): string => `room:${1 + (id % topics)}`;

/** One row of the original's config: connections for ids first..last, all from one source address. */
export interface SourceRow {
  source: string;
  firstId: number;
  lastId: number;
}

/** A run of consecutive ids from one source address on local ports from `firstPort` up (see spareRuns): what a worker is told. */
export interface Slice {
  source: string;
  firstId: number;
  count: number;
  firstPort: number;
}

export interface FloodOptions {
  host: string;
  port: number;
  /**
   * Servers on other addresses (edges on several hosts, none in front): worker i opens its streams at
   * servers[i mod n], so the streams spread over them evenly, a worker's share at a time. Default: host:port alone.
   */
  servers?: { host: string; port: number }[];
  rows: SourceRow[];
  /** Local ports to bind, first..last; each source address uses them from the first up, skipping ports in use. */
  ports: [number, number];
  /** Connects per second over all workers; 0: as fast as `concurrency` allows. */
  rate: number;
  /** Connects in flight (not yet welcomed) at most, over all workers. */
  concurrency: number;
  /** Seconds to hold every stream once all are open (or failed). */
  duration: number;
  /** Hard stop, seconds after start: the run ends by then whatever happens. */
  maxSeconds: number;
  /** Ends the hold early: the workers close every stream (RST) and the summary follows. */
  stop?: AbortSignal;
  /** Connections per worker at most; default and ceiling: the open-file limit minus a reserve. */
  perWorker?: number;
  /** Called with the merged totals each time a worker reports (about every `reportMs`). */
  onReport?: (totals: FloodTotals) => void;
  reportMs?: number;
  /**
   * Once every stream is open, read what arrived every this many ms instead of
   * being woken by each chunk (see flood.c, READ_EVERY_MS): on a box shared
   * with the server, the wake-ups cost both sides CPU. Delivery times do not
   * change; the read lag grows by up to this. Default 0: wake on every arrival.
   */
  readEveryMs?: number;
  /** Which streams to open: chunked (default), sse or ws. */
  transport?: 'chunked' | 'sse' | 'ws';
  /** Open a stream again when it ends, after the browser client's full-jitter backoff (see flood.c). */
  reconnect?: boolean;
  /** Each stream also listens to one of this many topics, floodTopic(id, topics) (0 or none: no topics). */
  topics?: number;
  /** Told of delivery latencies as they arrive (µs, with a count), so a benchmark can histogram each phase apart. */
  onDelivery?: (micros: number, count: number) => void;
}

export interface FloodTotals {
  target: number;
  workers: number;
  elapsedSeconds: number;
  attempted: number;
  connected: number;
  open: number;
  welcomed: number;
  closed: number;
  failed: number;
  /** Message chunks, or WebSocket frames (the welcome is not one, as in the server's /stats). */
  chunks: number;
  /** Data bytes of those chunks. */
  chunkBytes: number;
  /** Heartbeats received (chunked and SSE; WebSocket pings are not counted): not in `chunks`, which the server's /stats counts them in. */
  heartbeats: number;
  /** Everything read from the sockets: headers, welcome, chunk framing. */
  bytes: number;
  /** Chunk lines that began with t=<send time>. */
  messages: number;
  /** Streams opened again after they ended (with reconnect). */
  reconnects: number;
  errors: Record<string, number>;
  /** All workers have tried every connect and each one was welcomed or failed. */
  ramped: boolean;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

export interface FloodSummary extends FloodTotals {
  /** Streams open when the hold ended, just before the RST. */
  held: number;
  peakOpen: number;
  rampSeconds: number;
  connectsPerSecond: number;
  workerCpuMicrosPerConnect: number;
  welcomeLatencyMs: LatencySummary;
  /** From a message's t= stamp to the kernel's receive timestamp of the chunk (see flood.c). */
  deliveryLatencyMs: LatencySummary;
  /** From that receive timestamp to the worker's read: the load generator's own delay, not the server's. */
  readLagMs: LatencySummary;
  /** Measured when the most streams were open. */
  rss: { workersBytes: number; parentBytes: number; workerBytesPerConnection: number; totalBytesPerConnection: number };
}

const ipToInt = (ip: string) => ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
const intToIp = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');

/** "127.0.1.1-127.0.1.40", "127.0.1.1", or a comma-separated list of either → the addresses. */
export function parseSources(text: string): string[] {
  return text.split(',').flatMap((part) => {
    const [from, to = from] = part.trim().split('-');
    if (!isIPv4(from) || !isIPv4(to) || ipToInt(to) < ipToInt(from)) throw new Error(`source '${part}' is not an IPv4 address or A-B range`);
    return Array.from({ length: ipToInt(to) - ipToInt(from) + 1 }, (_, i) => intToIp(ipToInt(from) + i));
  });
}

/** Ids first..last split over the sources in contiguous blocks, the first sources taking one more when it does not divide. */
export function rowsFromRanges(sources: string[], [first, last]: [number, number]): SourceRow[] {
  const total = last - first + 1;
  const rows: SourceRow[] = [];
  let next = first;
  for (let i = 0; i < sources.length && next <= last; i++) {
    const count = Math.floor(total / sources.length) + (i < total % sources.length ? 1 : 0);
    rows.push({ source: sources[i], firstId: next, lastId: next + count - 1 });
    next += count;
  }
  return rows;
}

/** The original's config: `sourceIP firstId lastId` per line; blank lines and # comments ignored. */
export function parseConfig(text: string, file = 'config'): SourceRow[] {
  const rows: SourceRow[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const [source, first, last, extra] = line.split(/\s+/);
    const bad = () => new Error(`${file}:${i + 1}: '${raw.trim()}' is not 'sourceIP firstId lastId'`);
    if (extra !== undefined || !isIPv4(source ?? '') || last === undefined) throw bad();
    try {
      const [firstId, lastId] = parseIdRange(`${first}-${last}`);
      rows.push({ source, firstId, lastId });
    } catch {
      throw bad();
    }
  });
  if (rows.length === 0) throw new Error(`${file}: no rows`);
  return rows;
}

/**
 * Splits the rows into workers of at most `perWorker` connections. Each source
 * address takes local ports from the first of `ports` up, continuing across
 * its rows, so no two sockets of a run share an address and port.
 */
export function planWorkers(rows: SourceRow[], ports: [number, number], perWorker: number): Slice[][] {
  const nextPort = new Map<string, number>();
  const workers: Slice[][] = [[]];
  let room = perWorker;
  for (const row of rows) {
    let firstId = row.firstId;
    let left = row.lastId - row.firstId + 1;
    const port = nextPort.get(row.source) ?? ports[0];
    if (port + left - 1 > ports[1]) {
      throw new Error(`${row.source} needs ${left} more local ports from ${port}, past ${ports[1]}: use more source addresses or a wider --ports range`);
    }
    nextPort.set(row.source, port + left);
    let firstPort = port;
    while (left > 0) {
      if (room === 0) {
        workers.push([]);
        room = perWorker;
      }
      const count = Math.min(left, room);
      workers[workers.length - 1].push({ source: row.source, firstId, count, firstPort });
      firstId += count;
      firstPort += count;
      left -= count;
      room -= count;
    }
  }
  return workers;
}

/**
 * Each slice's spare ports, [first, last] (empty when last < first), in the
 * order of planWorkers' slices. A worker skips a port something else holds (a
 * listener on this host), which pushes its slice's last ids past its run, onto
 * the next slice's ports; they go on in the spare ports instead. A source
 * address's ports past its last planned one are shared among its slices in
 * proportion to their counts, the last taking what is left.
 */
export function spareRuns(plan: Slice[][], ports: [number, number]): Array<Array<[number, number]>> {
  const bySource = new Map<string, { port: number; count: number }>(); // next spare port, connections not yet given spares
  for (const s of plan.flat()) {
    const seen = bySource.get(s.source) ?? { port: 0, count: 0 };
    bySource.set(s.source, { port: Math.max(seen.port, s.firstPort + s.count), count: seen.count + s.count });
  }
  return plan.map((slices) =>
    slices.map((s) => {
      const left = bySource.get(s.source)!;
      const n = Math.floor(((ports[1] - left.port + 1) * s.count) / left.count);
      const run: [number, number] = [left.port, left.port + n - 1];
      left.port += n;
      left.count -= s.count;
      return run;
    }),
  );
}

/** The value a worker's histogram bucket stands for (its middle), in µs; mirrors bucketOf in flood.c. */
export function bucketValue(bucket: number): number {
  if (bucket < 128) return bucket;
  const shift = Math.floor((bucket - 128) / 64) + 1;
  const sub = ((bucket - 128) % 64) + 64;
  return sub * 2 ** shift + 2 ** (shift - 1);
}

/** A latency histogram in microseconds, up to about 50 days. */
/** hdr-histogram-js is loaded on first use: the c1m CLI that registers this command also starts light edge processes. */
let hdr: typeof Hdr | undefined;
export const newHistogram = () => (hdr ??= createRequire(import.meta.url)('hdr-histogram-js') as typeof Hdr).build({ lowestDiscernibleValue: 1, highestTrackableValue: 2 ** 42, numberOfSignificantValueDigits: 3 });

/** Percentiles in milliseconds of a histogram in microseconds; `maxMicros` when the exact maximum is known elsewhere. */
export function latencySummary(histogram: ReturnType<typeof newHistogram>, maxMicros = histogram.maxValue): LatencySummary {
  const ms = (us: number) => +(us / 1000).toFixed(3);
  const count = histogram.totalCount;
  const at = (p: number) => ms(Math.min(histogram.getValueAtPercentile(p), maxMicros));
  return { count, p50: count ? at(50) : 0, p99: count ? at(99) : 0, p999: count ? at(99.9) : 0, max: ms(maxMicros) };
}

type Histogram = ReturnType<typeof newHistogram>;

/** The workers' reports merged: each one's latest running totals ("S" lines) and the latency histograms ("H" lines). */
class FloodTally {
  private readonly started = performance.now();
  private readonly welcome = newHistogram();
  private readonly delivery = newHistogram();
  private readonly readLag = newHistogram();
  /** The histograms by the letter of the workers' "H" lines. */
  private readonly histograms: Record<string, Histogram> = { w: this.welcome, d: this.delivery, l: this.readLag };
  /** Each worker's latest "S" line: its running totals. */
  private readonly latest: Array<Record<string, number>>;
  private peak = { open: 0, workersBytes: 0, parentBytes: 0 };

  constructor(
    private readonly target: number,
    workers: number,
    private readonly onDelivery?: (micros: number, count: number) => void,
  ) {
    this.latest = Array.from({ length: workers }, () => ({}));
  }

  private sum(key: string): number {
    return this.latest.reduce((n, w) => n + (w[key] ?? 0), 0);
  }

  private max(key: string): number {
    return Math.max(0, ...this.latest.map((w) => w[key] ?? 0));
  }

  /** Takes one line of worker `worker`'s output; after an "S" line, returns the merged totals. */
  read(worker: number, line: string): FloodTotals | undefined {
    if (line.startsWith('H ')) {
      const histogram = this.histograms[line[2]];
      if (!histogram) return undefined;
      for (const pair of line.slice(4).split(' ')) {
        const [bucket, count] = pair.split(':').map(Number);
        histogram.recordValueWithCount(bucketValue(bucket), count);
        if (histogram === this.delivery) this.onDelivery?.(bucketValue(bucket), count);
      }
    } else if (line.startsWith('S ')) {
      this.latest[worker] = Object.fromEntries(line.slice(2).split(' ').map((kv) => [kv.slice(0, kv.indexOf('=')), Number(kv.slice(kv.indexOf('=') + 1))]));
      const now = this.totals();
      if (now.open > this.peak.open) this.peak = { open: now.open, workersBytes: this.sum('rss_kb') * 1024, parentBytes: process.memoryUsage().rss };
      return now;
    }
    return undefined;
  }

  totals(): FloodTotals {
    const errors: Record<string, number> = {};
    for (const w of this.latest) for (const [key, n] of Object.entries(w)) if (key.startsWith('err_')) errors[key.slice(4)] = (errors[key.slice(4)] ?? 0) + n;
    const sum = (key: string) => this.sum(key);
    return {
      target: this.target,
      workers: this.latest.length,
      elapsedSeconds: +((performance.now() - this.started) / 1000).toFixed(1),
      attempted: sum('attempted'),
      connected: sum('connected'),
      open: sum('open'),
      welcomed: sum('welcomed'),
      closed: sum('closed'),
      failed: sum('failed'),
      chunks: sum('chunks'),
      chunkBytes: sum('chunk_bytes'),
      heartbeats: sum('heartbeats'),
      bytes: sum('bytes'),
      messages: sum('messages'),
      reconnects: sum('reconnects'),
      errors,
      ramped: this.latest.every((w) => (w.ramp_us ?? 0) > 0),
    };
  }

  /** The totals with the ramp, the latencies and the memory at the peak: the run's summary once every worker exited. */
  summary(): FloodSummary {
    const rampSeconds = this.max('ramp_us') / 1e6;
    const welcomed = this.sum('welcomed');
    const peak = this.peak;
    return {
      ...this.totals(),
      held: this.sum('held'),
      peakOpen: peak.open,
      rampSeconds: +rampSeconds.toFixed(2),
      connectsPerSecond: rampSeconds > 0 ? Math.round(welcomed / rampSeconds) : 0,
      workerCpuMicrosPerConnect: welcomed ? Math.round(this.sum('ramp_cpu_us') / welcomed) : 0,
      // The workers' buckets stand for their middle; the exact maxima come from the workers.
      welcomeLatencyMs: latencySummary(this.welcome, this.max('welcome_max_us')),
      deliveryLatencyMs: latencySummary(this.delivery, this.max('delivery_max_us')),
      readLagMs: latencySummary(this.readLag, this.max('read_lag_max_us')),
      rss: {
        workersBytes: peak.workersBytes,
        parentBytes: peak.parentBytes,
        workerBytesPerConnection: peak.open ? Math.round(peak.workersBytes / peak.open) : 0,
        totalBytesPerConnection: peak.open ? Math.round((peak.workersBytes + peak.parentBytes) / peak.open) : 0,
      },
    };
  }
}

/** The workers' slices, their spare ports and the streams they open in all; throws when the worker is not built or no socket fits. */
function planFlood(options: FloodOptions): { plan: Slice[][]; spares: Array<Array<[number, number]>>; target: number } {
  if (!existsSync(FLOOD_WORKER)) throw new Error(`${FLOOD_WORKER} is missing: build it with npm run build`);
  const limit = openFileLimit() - WORKER_RESERVED_FDS;
  const perWorker = Math.min(options.perWorker ?? limit, limit);
  if (perWorker < 1) throw new Error(`the open-file limit (${openFileLimit()}) leaves no room for sockets`);
  const plan = planWorkers(options.rows, options.ports, perWorker);
  const target = plan.reduce((n, slices) => n + slices.reduce((m, s) => m + s.count, 0), 0);
  return { plan, spares: spareRuns(plan, options.ports), target };
}

const serversOf = (options: FloodOptions) => (options.servers?.length ? options.servers : [options]);

/** How many streams each of `options.servers` takes (worker i opens its streams at servers[i mod n]). */
export function streamsPerServer(options: FloodOptions): number[] {
  const counts = serversOf(options).map(() => 0);
  planFlood(options).plan.forEach((slices, i) => (counts[i % counts.length] += slices.reduce((n, s) => n + s.count, 0)));
  return counts;
}

/**
 * Starts worker `i` on its slices; `share`, its part of the streams: it ramps in proportion, so that all finish their
 * ramp together.
 */
function spawnWorker(options: FloodOptions, i: number, slices: Slice[], spares: Array<[number, number]>, share: number): ChildProcessWithoutNullStreams {
  const servers = serversOf(options);
  const server = servers[i % servers.length];
  const args = [
    server.host,
    String(server.port),
    String(options.rate * share),
    String(Math.max(1, Math.ceil(options.concurrency * share))),
    String(options.reportMs ?? 1000),
    String(options.maxSeconds + 5), // the worker's own backstop, after the parent's hard stop
    String(options.readEveryMs ?? 0),
    options.transport ?? 'chunked',
    options.reconnect ? '1' : '0',
    String(options.topics ?? 0),
    ...slices.map((s, j) => `${s.source}:${s.firstId}:${s.count}:${s.firstPort}:${spares[j].join('-')}`),
  ];
  const child = spawn(FLOOD_WORKER, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  // The load generator yields to the server it measures when they share a host (dozens of workers, one router).
  if (child.pid) setPriority(child.pid, WORKER_NICE);
  return child;
}

/** Worker `i`'s lines to `onLine`; resolves when it exits cleanly, rejects with what it printed to stderr otherwise. */
function workerExit(child: ChildProcessWithoutNullStreams, i: number, onLine: (line: string) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    createInterface({ input: child.stdout }).on('line', onLine);
    child.once('error', reject);
    child.once('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`flood worker ${i} exited with ${code ?? signal}: ${stderr.trim()}`))));
  });
}

/** Runs the flood to its end (hold over, or the hard stop) and returns the summary. */
export async function runFlood(options: FloodOptions): Promise<FloodSummary> {
  const { plan, spares, target } = planFlood(options);
  const tally = new FloodTally(target, plan.length, options.onDelivery);
  let stopTimer: NodeJS.Timeout | undefined;
  const children: ChildProcessWithoutNullStreams[] = [];
  const stopAll = () => children.forEach((child) => child.stdin.end());
  const onLine = (worker: number, line: string) => {
    const now = tally.read(worker, line);
    if (!now) return;
    // Every stream open or failed: hold for the duration, then stop.
    if (now.ramped && !stopTimer) stopTimer = setTimeout(stopAll, options.duration * 1000);
    options.onReport?.(now);
  };
  const exits = plan.map((slices, i) => {
    const child = spawnWorker(options, i, slices, spares[i], slices.reduce((n, s) => n + s.count, 0) / target);
    children.push(child);
    return workerExit(child, i, (line) => onLine(i, line));
  });
  // Hard stop: ask the workers to stop (they close with RST), then kill any that did not.
  const hardStop = setTimeout(stopAll, options.maxSeconds * 1000);
  const kill = setTimeout(() => children.forEach((c) => c.kill('SIGKILL')), (options.maxSeconds + 10) * 1000);
  const onSignal = () => stopAll();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  options.stop?.addEventListener('abort', onSignal);
  if (options.stop?.aborted) stopAll();
  try {
    const results = await Promise.allSettled(exits);
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
  } finally {
    [stopTimer, hardStop, kill].forEach((t) => clearTimeout(t));
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    options.stop?.removeEventListener('abort', onSignal);
  }
  return tally.summary();
}
