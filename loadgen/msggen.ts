/**
 * `c1m loadgen msggen`: the original's message generator. G generators each
 * send to a random user in [1, N] after a random interval (or one fixed
 * overall rate), as POST /send/<id> over keep-alive HTTP to the backend API.
 * Every body starts with `t=<epoch ms>` so the flood can time its delivery.
 */
import { Pool } from 'undici';
import { epochMs } from '../server/stream.js';
import { latencySummary, newHistogram, type LatencySummary } from './flood.js';

export interface MsggenOptions {
  apiHost: string;
  apiPort: number;
  /** Senders are drawn from 1..users. */
  users: number;
  generators: number;
  /** Each generator waits a random interval in [min, max] ms between its sends. */
  interval: [number, number];
  /** Fixed overall sends per second instead of the generators. */
  rate?: number;
  /** Seconds of sending. */
  duration: number;
  token?: string;
  /** Keep-alive connections to the API. */
  connections: number;
  /** Pad each body to at least this many bytes. */
  size: number;
  onReport?: (report: MsggenReport) => void;
  reportMs?: number;
}

export interface MsggenReport {
  elapsedSeconds: number;
  sent: number;
  answered: number;
  /** Sends not made because `connections` x 64 requests were already waiting: the API falls behind. */
  skipped: number;
  delivered: number;
  errors: Record<string, number>;
}

export interface MsggenSummary extends MsggenReport {
  seconds: number;
  configuredRate: number;
  achievedRate: number;
  deliveredPerSecond: number;
  apiLatencyMs: LatencySummary;
}

/** Messages waiting per connection at most before a send is skipped, so a slow API cannot pile up unbounded requests. */
const QUEUE_PER_CONNECTION = 64;

export async function runMsggen(options: MsggenOptions): Promise<MsggenSummary> {
  // undici: a fraction of node:http's CPU per request, which at thousands of sends/s is the difference between measuring c1m and measuring the client.
  const pool = new Pool(`http://${options.apiHost}:${options.apiPort}`, { connections: options.connections });
  const histogram = newHistogram();
  const report: MsggenReport = { elapsedSeconds: 0, sent: 0, answered: 0, skipped: 0, delivered: 0, errors: {} };
  const headers: Record<string, string> = { 'content-type': 'text/plain' };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  const error = (kind: string) => (report.errors[kind] = (report.errors[kind] ?? 0) + 1);
  const maxOutstanding = options.connections * QUEUE_PER_CONNECTION;
  let outstanding = 0;
  let settled: () => void = () => {};

  const send = () => {
    if (outstanding >= maxOutstanding) return void report.skipped++;
    const id = 1 + Math.floor(Math.random() * options.users);
    const body = `t=${epochMs().toFixed(3)} msggen ${report.sent}`.padEnd(options.size, '.');
    const t0 = performance.now();
    outstanding++;
    report.sent++;
    const done = () => {
      outstanding--;
      if (outstanding === 0) settled();
    };
    pool
      .request({ method: 'POST', path: `/send/${id}`, headers, body })
      .then(async (res) => {
        const text = await res.body.text();
        histogram.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
        report.answered++;
        let delivered: unknown;
        try {
          delivered = res.statusCode === 200 ? (JSON.parse(text) as { delivered?: unknown }).delivered : undefined;
        } catch {
          // counted below as a bad answer
        }
        if (typeof delivered === 'number') report.delivered += delivered;
        else error(res.statusCode === 200 ? 'answer' : `http${res.statusCode}`);
      })
      .catch((err: NodeJS.ErrnoException) => error(err.code ?? 'network'))
      .finally(done);
  };

  // Open every connection (and compile undici's parser) before the clock starts: that first ~200 ms would otherwise queue the first sends and own the p99.
  await Promise.all(Array.from({ length: options.connections }, () => pool.request({ method: 'GET', path: '/stats', headers }).then((res) => res.body.dump())));
  const started = performance.now();
  const stopAt = started + options.duration * 1000;
  const timers = new Set<NodeJS.Timeout>();
  if (options.rate) {
    // Open loop: catch up to rate x elapsed every millisecond or so.
    const rate = options.rate;
    let due = 0;
    timers.add(
      setInterval(() => {
        const now = Math.min(performance.now(), stopAt);
        const target = Math.floor(((now - started) / 1000) * rate);
        for (; due < target; due++) send();
      }, 1),
    );
  } else {
    const [min, max] = options.interval;
    const generator = () => {
      const timer = setTimeout(
        () => {
          timers.delete(timer);
          if (performance.now() >= stopAt) return;
          send();
          generator();
        },
        min + Math.random() * (max - min),
      );
      timers.add(timer);
    };
    for (let g = 0; g < options.generators; g++) generator();
  }
  const ticker = setInterval(() => {
    report.elapsedSeconds = +((performance.now() - started) / 1000).toFixed(1);
    options.onReport?.(report);
  }, options.reportMs ?? 1000);

  await new Promise((r) => setTimeout(r, options.duration * 1000));
  timers.forEach((t) => clearTimeout(t));
  const seconds = (performance.now() - started) / 1000;
  // Wait for the answers still on their way, at most 10 s.
  if (outstanding > 0) await Promise.race([new Promise<void>((r) => (settled = r)), new Promise((r) => setTimeout(r, 10_000))]);
  clearInterval(ticker);
  await pool.close();
  report.elapsedSeconds = +((performance.now() - started) / 1000).toFixed(1);
  return {
    ...report,
    seconds: +seconds.toFixed(2),
    configuredRate: options.rate ?? Math.round((options.generators * 2000) / (options.interval[0] + options.interval[1])),
    achievedRate: Math.round(report.answered / seconds),
    deliveredPerSecond: Math.round(report.delivered / seconds),
    apiLatencyMs: latencySummary(histogram),
  };
}
