/**
 * What resumes from old ids cost the sends around them: the API's answer
 * times for sends at a steady rate, alone and with bursts of concurrent
 * resumes from the oldest kept id (each a chunked stream that gets the oldest
 * part of what it missed, up to its byte budget, and ends), alternated. The
 * resumes are of distinct users (2, 3, …), all following user 1, whose sends
 * the history keeps: as the streams of a lost edge come back. One
 * `c1m server` on loopback with a history in a temporary directory. The
 * resumes run in a worker thread: read in the thread that times the sends,
 * their megabytes would delay the answers it measures.
 *
 *   node dist/bench/replay.js [--kept 1000] [--size 30000] [--resumes 32] [--rate 200] [--seconds 10] [--rounds 3]
 */
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { spawnServer } from '../loadgen/server-process.js';
import { stopChild } from '../cluster/supervisor.js';
import { percentile, post } from './probe.js';

const { values } = parseArgs({
  options: {
    kept: { type: 'string', default: '1000' },
    size: { type: 'string', default: '30000' },
    resumes: { type: 'string', default: '32' },
    rate: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
  },
});
const [kept, size, resumes, rate, seconds, rounds] = [values.kept, values.size, values.resumes, values.rate, values.seconds, values.rounds].map(Number);

/** One resume of `user` from `after` on /test/<user>: its time to the stream's end, and the bytes it got. */
function resumeOnce(port: number, user: number, after: number): Promise<{ ms: number; bytes: number }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/test/${user}?lastEventId=${after}`, agent: false }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`a resume got ${res.statusCode}`));
      let bytes = 0;
      res.on('data', (data: Buffer) => (bytes += data.length));
      res.on('end', () => resolve({ ms: performance.now() - start, bytes }));
    });
    req.on('error', reject);
  });
}

const round1 = (n: number) => Math.round(n * 100) / 100;

/** A user no resuming stream hears: the steady sends go to it. */
const quietUser = resumes + 2;

type Replayed = { ms: number; bytes: number }[];

/** The worker's side: a burst of concurrent resumes, users 2.. from `after`, for each message; answers what each got. */
function resumeBursts(port: number): void {
  parentPort!.on('message', async (after: number) => {
    const replays = await Promise.all(Array.from({ length: resumes }, (_, r) => resumeOnce(port, 2 + r, after)));
    parentPort!.postMessage(replays);
  });
}

/** Sends to quietUser at `rate` for `seconds` (each at its time, not after the last answer); with `after`, a burst of `resumes` concurrent resumes each second, from `bursts`. */
async function phase(apiPort: number, bursts: Worker, after?: number) {
  const times: number[] = [];
  const replays: Replayed = [];
  const pending: Promise<unknown>[] = [];
  const burst = (from: number) =>
    new Promise<void>((resolve) => {
      bursts.once('message', (got: Replayed) => (replays.push(...got), resolve()));
      bursts.postMessage(from);
    });
  const start = performance.now();
  let bursting: Promise<void> = Promise.resolve();
  for (let i = 0; i < rate * seconds; i++) {
    const at = start + (i * 1000) / rate;
    const wait = at - performance.now();
    if (wait > 0) await sleep(wait);
    if (after !== undefined && i % rate === 0) pending.push((bursting = bursting.then(() => burst(after))));
    const sent = performance.now();
    pending.push(post(apiPort, `/send/${quietUser}`, 'x'.repeat(100)).then(() => times.push(performance.now() - sent)));
  }
  await Promise.all(pending);
  times.sort((a, b) => a - b);
  const replayMs = replays.map((r) => r.ms).sort((a, b) => a - b);
  return {
    apiP50: round1(percentile(times, 0.5)),
    apiP99: round1(percentile(times, 0.99)),
    ...(after !== undefined && { resumes: replays.length, bytesPerResume: Math.round(replays.reduce((n, r) => n + r.bytes, 0) / replays.length), resumeP50: round1(percentile(replayMs, 0.5)), resumeP99: round1(percentile(replayMs, 0.99)) }),
  };
}

if (!isMainThread) resumeBursts(workerData as number);
else {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-replay-'));
  const server = await spawnServer(['--db', join(dir, 'c1m.db'), '--history-seconds', '3600', '--history-per-subject', String(kept), '--heartbeat', '0']);
  const bursts = new Worker(new URL(import.meta.url), { workerData: server.port, argv: process.argv.slice(2) });
  try {
    await post(server.apiPort, '/subscriptions', JSON.stringify(Array.from({ length: resumes }, (_, r) => [2 + r, 1])));
    const body = 'm'.repeat(size);
    const { id: first } = await post<{ id: number }>(server.apiPort, '/send/1', body);
    for (let i = 1; i < kept; i++) await post(server.apiPort, '/send/1', body);
    for (let round = 1; round <= rounds; round++) {
      // Alternated, so that a drift of the box over the run weighs on both.
      const alone = await phase(server.apiPort, bursts);
      const withResumes = await phase(server.apiPort, bursts, first - 1);
      console.log(JSON.stringify({ round, kept, size, rate, resumesPerSecond: resumes, alone, withResumes, apiP99Moved: round1(withResumes.apiP99 - alone.apiP99) }));
    }
  } finally {
    await bursts.terminate();
    await stopChild(server.child);
    rmSync(dir, { recursive: true, force: true });
  }
}
