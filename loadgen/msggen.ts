/**
 * `c1m loadgen msggen`: the original's message generator. G generators each
 * send to a random user in [1, N] after a random interval (or one fixed
 * overall rate), as POST /send/<id> over keep-alive HTTP to the backend API;
 * with topics, a share of the sends go to a random topic instead (the ones the
 * flood's streams listen to). Every body starts with `t=<epoch ms>` so the
 * flood can time its delivery.
 */
import { ApiClient, type Answer } from './api-client.js';
import { epochMs } from '../router/latency.js';
import { floodTopic, latencySummary, newHistogram, type LatencySummary } from './flood.js';

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
  /** Topics the flood's streams listen to (floodTopic), 0 or none: sends go to users only. */
  topics?: number;
  /** The share of sends that go to a random one of the topics instead of a user. */
  topicShare?: number;
  onReport?: (report: MsggenReport) => void;
  reportMs?: number;
}

export interface MsggenReport {
  elapsedSeconds: number;
  sent: number;
  /** Of the sent, those to a topic. */
  toTopics: number;
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

/** Calls `send` until `stopAt`: at options.rate a second (an open loop), or from the original's generators, each waiting a random interval between sends. */
function pace(options: MsggenOptions, send: () => void, started: number, stopAt: number): Set<NodeJS.Timeout> {
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
  return timers;
}

/** Messages waiting per connection at most before a send is skipped, so a slow API cannot pile up unbounded requests. */
const QUEUE_PER_CONNECTION = 64;

export async function runMsggen(options: MsggenOptions): Promise<MsggenSummary> {
  const histogram = newHistogram();
  const report: MsggenReport = { elapsedSeconds: 0, sent: 0, toTopics: 0, answered: 0, skipped: 0, delivered: 0, errors: {} };
  const topics = options.topics ?? 0;
  const topicShare = topics > 0 ? (options.topicShare ?? 0) : 0;
  const headers: Record<string, string> = { 'content-type': 'text/plain' };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  const api = new ApiClient(options.apiHost, options.apiPort, options.connections, headers);
  const error = (kind: string) => (report.errors[kind] = (report.errors[kind] ?? 0) + 1);
  const maxOutstanding = options.connections * QUEUE_PER_CONNECTION;
  let outstanding = 0;
  let settled: () => void = () => {};

  const settle = () => {
    outstanding--;
    if (outstanding === 0) settled();
  };
  const answered = ({ status, body, micros }: Answer) => {
    histogram.recordValue(Math.max(1, Math.round(micros)));
    report.answered++;
    let delivered: unknown;
    try {
      delivered = status === 200 ? (JSON.parse(body) as { delivered?: unknown }).delivered : undefined;
    } catch {
      // counted below as a bad answer
    }
    if (typeof delivered === 'number') report.delivered += delivered;
    else error(status === 200 ? 'answer' : `http${status}`);
    settle();
  };
  const failed = (kind: string) => {
    error(kind);
    settle();
  };
  const send = () => {
    if (outstanding >= maxOutstanding) return void report.skipped++;
    const toTopic = Math.random() < topicShare;
    const subject = toTopic ? floodTopic(Math.floor(Math.random() * topics), topics) : 1 + Math.floor(Math.random() * options.users);
    const n = report.sent++;
    if (toTopic) report.toTopics++;
    outstanding++;
    // Stamped when written, not when queued: see ApiClient.
    api.request('POST', `/send/${subject}`, () => `t=${epochMs().toFixed(3)} msggen ${n}`.padEnd(options.size, '.'), answered, failed);
  };

  // Open every connection (and compile the answer parser) before the clock starts: that slow start would otherwise queue the first sends and own the p99.
  await api.ready();
  await Promise.all(Array.from({ length: options.connections }, () => new Promise<unknown>((resolve) => api.request('GET', '/stats', () => '', resolve, resolve))));
  const started = performance.now();
  const stopAt = started + options.duration * 1000;
  const timers = pace(options, send, started, stopAt);
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
  // Sends still unanswered after the grace are given up, counted as errors of kind 'unanswered'.
  api.close();
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
