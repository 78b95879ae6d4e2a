/**
 * The C flood on every transport against a real server: welcomes, chunks and
 * timed messages counted alike, and --reconnect opening streams again, with
 * the backoff, after the server closed them.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { rowsFromRanges, runFlood, type FloodTotals } from '../loadgen/flood.js';
import { epochMs } from '../router/latency.js';
import type { Transport } from '../server/stream.js';
import { startServer } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m;
afterEach(() => c1m?.close());

/** Streams for users 1..`users` from `source`, on local ports from `firstPort`, held until `stop`; totals every 100 ms. */
const floodOf = (transport: Transport, source: string, users: number, firstPort: number, stop: AbortController, onReport: (t: FloodTotals) => void, reconnect = false) =>
  runFlood({
    host: '127.0.0.1',
    port: c1m.port,
    rows: rowsFromRanges([source], [1, users]),
    ports: [firstPort, firstPort + 199],
    rate: 0,
    concurrency: users,
    duration: 600,
    maxSeconds: 60,
    reportMs: 100,
    transport,
    reconnect,
    stop: stop.signal,
    onReport,
  });

describe.each(['chunked', 'sse', 'ws'] as const)('flood --transport %s', (transport) => {
  it('opens, counts and times messages, and with --reconnect opens streams again after they end', async () => {
    c1m = await startServer();
    c1m.store.addSubscriptions(Array.from({ length: 49 }, (_, i): [number, number] => [i + 2, 1]));
    const stop = new AbortController();
    let latest: FloodTotals | undefined;
    const flood = floodOf(transport, '127.0.4.1', 50, { chunked: 44000, sse: 44200, ws: 44400 }[transport], stop, (t) => (latest = t), true);
    try {
      await until('fifty streams', () => latest?.ramped === true && c1m.stats().connections === 50, 20_000);
      expect(c1m.stats().transports[transport].open).toBe(50);
      c1m.router.send(1, `t=${epochMs()} one\ntwo`);
      c1m.router.send(2, `t=${epochMs()} solo`);
      await until('the messages timed', () => latest!.messages >= 51, 5000);
      expect(latest).toMatchObject({ chunks: 51, messages: 51, failed: 0 });

      c1m.registry.closeSome(10); // as a drain does: their clients come back
      await until('ten streams welcomed again', () => latest!.welcomed === 60 && c1m.stats().connections === 50, 10_000);
      expect(latest!.reconnects).toBe(10);
    } finally {
      stop.abort();
    }
    const summary = await flood;
    expect(summary.errors.http ?? 0).toBe(0);
    expect(summary.deliveryLatencyMs.count).toBe(51);
  });
});

describe.each(['chunked', 'sse'] as const)('flood --transport %s, heartbeats on', (transport) => {
  it('counts heartbeats apart from the message chunks', async () => {
    c1m = await startServer({ heartbeatSeconds: 1 });
    const stop = new AbortController();
    let latest: FloodTotals | undefined;
    const flood = floodOf(transport, '127.0.4.2', 10, { chunked: 44600, sse: 44800 }[transport], stop, (t) => (latest = t));
    try {
      await until('two rounds of heartbeats', () => (latest?.heartbeats ?? 0) >= 20, 20_000);
      c1m.router.send(1, `t=${epochMs()} one`);
      await until('the message timed', () => latest!.messages === 1, 5000);
      expect(latest).toMatchObject({ chunks: 1, messages: 1, failed: 0 });
    } finally {
      stop.abort();
    }
    await flood;
  });
});
