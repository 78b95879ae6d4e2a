/**
 * What the benchmarks share to time deliveries from outside: streams held by
 * the C flood, whose workers time every message from its `t=` stamp to its
 * arrival, and sends to random users from `c1m loadgen msggen` in a process of
 * its own, as a user would run it, so the sender's event loop is not shared
 * with the benchmark's.
 */
import { spawn } from 'node:child_process';
import { setPriority } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { latencySummary, newHistogram, rowsFromRanges, runFlood, type FloodSummary, type FloodTotals } from '../loadgen/flood.js';
import type { MsggenSummary } from '../loadgen/msggen.js';
import { c1mArgv } from '../cluster/supervisor.js';
import { cpuOf } from '../loadgen/server-process.js';
import { epochMs } from '../router/latency.js';
import { openStore } from '../subsmanager/store.js';

const HOST = '127.0.0.1';
/** 12 source addresses of their own, so no other run's ports or TIME_WAITs get in the way. */
const SOURCES = Array.from({ length: 12 }, (_, i) => `127.0.30.${i + 1}`);

/** Delivery latencies land in the histogram of the phase being measured. */
let phase = newHistogram();

/** Starts a new phase: delivery latencies from now on are counted apart. */
export function newPhase(): void {
  phase = newHistogram();
}

/** Delivery latency of the current phase, in ms. */
export const phaseLatency = () => latencySummary(phase);

/** Holds streams for ids first..first+count-1 until stopped; its totals update every 100 ms. `readEveryMs`: see FloodOptions. */
/** Holds streams first..first+count-1 with the C flood; with `topics`, each also listens to one of that many (floodTopic). */
export function hold(port: number, first: number, count: number, portBase: number, transport: 'chunked' | 'sse' | 'ws' = 'chunked', readEveryMs = 0, topics = 0) {
  const stop = new AbortController();
  let latest: FloodTotals | undefined;
  // A flood that fails (its worker missing or refused) fails opened(), so that the bench's own cleanup runs: a rejection
  // no one waits for yet would end the process at once and leave the servers it started running.
  let failed: Error | undefined;
  let told = false;
  const done = runFlood({
    host: HOST,
    port,
    rows: rowsFromRanges(SOURCES, [first, first + count - 1]),
    ports: [portBase, portBase + Math.ceil(count / SOURCES.length) + 10],
    rate: 10_000,
    concurrency: 2000,
    duration: 3600,
    maxSeconds: 1800,
    stop: stop.signal,
    reportMs: 100,
    transport,
    readEveryMs,
    topics,
    onReport: (t) => (latest = t),
    onDelivery: (micros, n) => phase.recordValueWithCount(micros, n),
  }).catch((err: Error): undefined => {
    failed = err;
    return undefined;
  });
  return {
    chunks: () => latest?.chunks ?? 0,
    async opened(): Promise<FloodTotals> {
      while (!latest?.ramped) {
        if (failed) {
          told = true;
          throw failed;
        }
        await sleep(100);
      }
      return latest;
    },
    /** The flood's summary, none where it failed (said here, unless opened() threw it): never throws, so cleanup goes on. */
    async close(): Promise<FloodSummary | undefined> {
      stop.abort();
      const summary = await done;
      if (failed && !told) {
        told = true;
        console.error(`the flood failed: ${failed.message}`);
      }
      return summary;
    },
  };
}

export type Holder = ReturnType<typeof hold>;

/** The nearest-rank `q` quantile (0..1) of values sorted ascending; NaN for none. */
export function percentile(sorted: number[], q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] : NaN;
}

/** POSTs to the backend API on loopback; a non-2xx answer is an error naming it. */
export async function post<T = { delivered: number }>(apiPort: number, path: string, body: string | Uint8Array, type?: string): Promise<T> {
  const res = await fetch(`http://127.0.0.1:${apiPort}${path}`, { method: 'POST', body: typeof body === 'string' ? body : new Uint8Array(body), headers: type ? { 'content-type': type } : undefined });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json() as Promise<T>;
}

export const cpuOfAll = (pids: number[]) => pids.reduce((n, pid) => n + cpuOf(pid), 0);

/**
 * Niceness of msggen: like the flood's workers, the sender yields to the
 * server it measures when they share a host. At nice 0, a request that wakes
 * the server while msggen holds the other core waits for msggen's time slice,
 * which shows in the delivery latency (the write-up of `npm run bench`'s unicast latency).
 */
const MSGGEN_NICE = 5;

/**
 * How msggen shares the cores with the server: at nice 5 (`nice`), or at
 * SCHED_IDLE (`idle`, through util-linux's chrt), where it runs only on a core
 * the server leaves free and any wake-up of the server preempts it at once, as
 * if the backend were another machine. Only for a server that leaves cores
 * idle: on a saturated box an idle-policy msggen falls behind its rate.
 */
export type SenderPolicy = 'nice' | 'idle';

/** Runs `c1m loadgen msggen` to its end and returns its JSON summary. */
function msggen(args: string[], policy: SenderPolicy): Promise<MsggenSummary> {
  return new Promise((resolve, reject) => {
    const command = c1mArgv(['loadgen', 'msggen', ...args]);
    const child = policy === 'idle' ? spawn('chrt', ['--idle', '0', ...command], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    if (child.pid && policy === 'nice') setPriority(child.pid, MSGGEN_NICE);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`c1m loadgen msggen exited with ${code}: ${err.slice(-2000)}`))));
  });
}

/**
 * Sends to random single users (ids 1..users) at `rate` per second for
 * `seconds` through the API, and reports the delivery latency the held
 * streams measured meanwhile, the CPU `pids` spent per send, and the CPU
 * `edgePids` (a cluster's edges, where given) spent per delivered chunk.
 */
export async function randomSends(apiPort: number, users: number, rate: number, seconds: number, pids: number[], sender: { policy: SenderPolicy; connections: number } = { policy: 'nice', connections: 8 }, edgePids: number[] = []) {
  newPhase();
  const cpu0 = cpuOfAll(pids);
  const edgesCpu0 = cpuOfAll(edgePids);
  const args = ['--api-host', HOST, '--api-port', String(apiPort), '--users', String(users), '--rate', String(rate), '--duration', String(seconds), '--connections', String(sender.connections)];
  const sent = await msggen(args, sender.policy);
  await sleep(500);
  const cpu = cpuOfAll(pids) - cpu0;
  const edgesCpu = cpuOfAll(edgePids) - edgesCpu0;
  const deliveryLatencyMs = phaseLatency();
  return {
    configuredRate: rate,
    achievedRate: sent.achievedRate,
    errors: sent.errors,
    skipped: sent.skipped,
    apiLatencyMs: sent.apiLatencyMs,
    deliveryLatencyMs,
    cpuMicrosPerSend: +((cpu * 1e6) / sent.answered).toFixed(1),
    ...(edgePids.length > 0 && { edgesCpuMicrosPerDelivery: +((edgesCpu * 1e6) / deliveryLatencyMs.count).toFixed(2) }),
  };
}

const chunksOf = (holders: Holder[]) => holders.reduce((n, h) => n + h.chunks(), 0);

/** Waits until the holders have received `expected` chunks in all, or nothing arrived for 3 s; returns the count and when the last one came. */
async function received(holders: Holder[], expected: number) {
  let [last, lastChange] = [chunksOf(holders), performance.now()];
  while (last < expected && performance.now() - lastChange < 3000) {
    await sleep(5);
    const now = chunksOf(holders);
    if (now !== last) [last, lastChange] = [now, performance.now()];
  }
  return { chunks: last, at: lastChange };
}

/** Sends one message, stamped `t=<now>`, to the user every held stream follows; `label` tells the sends apart. */
export type HubSend = (label: string) => Promise<unknown>;

/** A HubSend through c1m's backend API, to `hub`. */
export const sendTo =
  (apiPort: number, hub: number | string): HubSend =>
  (label) =>
    post(apiPort, `/send/${hub}`, `t=${epochMs()} ${label}`);

/**
 * One send to every stream: first `count` single sends, each delivered to all
 * before the next (the latency of one send to every stream), then `count`
 * sends back to back (delivered chunks/s, the CPU `pids` spent per delivery).
 */
export async function broadcast(send: HubSend, streams: number, count: number, holders: Holder[], pids: number[]) {
  newPhase();
  for (let i = 0; i < count; i++) {
    const before = chunksOf(holders);
    await send(`one ${i}`);
    await received(holders, before + streams);
  }
  const oneSend = phaseLatency();
  const [chunks0, cpu0, t0] = [chunksOf(holders), cpuOfAll(pids), performance.now()];
  for (let i = 0; i < count; i++) await send(`burst ${i}`);
  const done = await received(holders, chunks0 + count * streams);
  const seconds = (done.at - t0) / 1000;
  const got = done.chunks - chunks0;
  const cpu = cpuOfAll(pids) - cpu0;
  return {
    oneSendLatencyMs: oneSend,
    burst: {
      sends: count,
      received: got,
      lost: count * streams - got,
      seconds: +seconds.toFixed(2),
      deliveredChunksPerSecond: Math.round(got / seconds),
      cpuMicrosPerDelivery: +((cpu * 1e6) / got).toFixed(2),
    },
  };
}

/** Everyone in 1..n follows `hub`, in the store at `db`. */
export function subscribeAll(db: string, hub: number, n: number): void {
  const store = openStore(db);
  for (let first = 1; first <= n; first += 100_000) {
    const pairs: [number, number][] = [];
    for (let user = first; user < Math.min(n + 1, first + 100_000); user++) pairs.push([user, hub]);
    store.addSubscriptions(pairs);
  }
  store.close();
}

/**
 * Asks a server one question at a time (`ask`) until `done` settles: the longest wait for an answer is about its
 * longest event-loop stall meanwhile (a question asked during a stall is answered when it ends).
 */
export async function longestAnswer(ask: () => Promise<unknown>, done: Promise<unknown>): Promise<{ longestMs: number; answers: number }> {
  let finished = false;
  void done.finally(() => (finished = true)).catch(() => undefined);
  let longestMs = 0;
  let answers = 0;
  while (!finished) {
    const asked = performance.now();
    await ask();
    longestMs = Math.max(longestMs, performance.now() - asked);
    answers++;
    await sleep(5);
  }
  return { longestMs, answers };
}
