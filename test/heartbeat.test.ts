/**
 * Heartbeats go only to streams that were silent: the hub's rounds against
 * stand-in streams on a fake clock (every write timed), then a real server's
 * chunked and SSE streams, one idle and one that messages keep busy.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { C1m } from '../index.js';
import { Registry } from '../router/registry.js';
import { HEARTBEAT, StreamHub } from '../server/stream.js';
import { until } from '../bench/until.js';
import { api, openStream, startServer, type SseClient, type StreamClient } from './helpers.js';

/** A stream as the hub sees it: its heartbeats' times, and a write that, as a real flush does, stamps wroteAt. */
function standIn(hub: StreamHub) {
  const stream = {
    beats: [] as number[],
    wroteAt: hub.tick,
    flush() {},
    write(chunk: Buffer) {
      if (chunk === HEARTBEAT) stream.beats.push(Date.now());
      stream.wroteAt = hub.tick;
      return 1;
    },
  };
  hub.heartbeatStreams!.add(stream);
  return stream;
}

/** The longest silence (ms) between `start`, the writes at `times` and `end`. */
function longestSilence(times: number[], start: number, end: number): number {
  const all = [start, ...[...times].sort((a, b) => a - b), end];
  return Math.max(...all.slice(1).map((t, i) => t - all[i]));
}

describe("the hub's heartbeat rounds", () => {
  afterEach(() => void vi.useRealTimers());

  it('beat an idle stream about once an interval and leave no stream silent longer than the interval and a round', () => {
    vi.useFakeTimers();
    const hub = new StreamHub(new Registry(16), 1 << 20, 25);
    const start = Date.now();
    const idle = Array.from({ length: 1000 }, () => standIn(hub));
    const busy = standIn(hub);
    const sometimes = standIn(hub);
    const messages: number[] = [];
    for (let ms = 0; ms < 300_000; ms += 100) {
      vi.advanceTimersByTime(100);
      if (ms % 10_000 === 0) busy.write(Buffer.from('message'));
      // Messages 30-40 s apart: each leaves the stream to its heartbeats for a while, at a different phase of the rounds.
      if (ms % 34_300 === 0) sometimes.write(Buffer.from('message')), messages.push(Date.now());
    }
    const end = Date.now();
    // A round is a tenth of the interval: a beat after 25 to 27.5 s of silence, never more often than one per interval.
    for (const stream of idle) {
      expect(longestSilence(stream.beats, start, end)).toBeLessThanOrEqual(27_500);
      expect(stream.beats.length).toBeGreaterThanOrEqual(10);
      expect(stream.beats.length).toBeLessThanOrEqual(12);
      expect(Math.min(...stream.beats.slice(1).map((t, i) => t - stream.beats[i]))).toBeGreaterThanOrEqual(25_000);
    }
    expect(busy.beats).toEqual([]);
    expect(longestSilence([...sometimes.beats, ...messages], start, end)).toBeLessThanOrEqual(27_500);
    expect(sometimes.beats.length).toBeLessThan(idle[0].beats.length);
    hub.close();
  });
});

describe('heartbeats on a real server', () => {
  let c1m: C1m | undefined;
  const clients: { close(): void }[] = [];
  afterEach(() => {
    clients.splice(0).forEach((c) => c.close());
    c1m?.close();
  });

  it('go to the idle chunked and SSE streams, not to the ones that messages keep busy', async () => {
    c1m = await startServer({ heartbeatSeconds: 1 });
    const open = async (transport: 'chunked' | 'sse', id: number) => {
      const client = await openStream(transport, c1m!.port, id);
      clients.push(client);
      return client;
    };
    const [idleChunked, busyChunked] = (await Promise.all([open('chunked', 1), open('chunked', 2)])) as StreamClient[];
    const [idleSse, busySse] = (await Promise.all([open('sse', 3), open('sse', 4)])) as SseClient[];
    // 3.5 s of messages, one every 250 ms to users 2 and 4: each busy stream is never silent for long.
    for (let i = 0; i < 14; i++) {
      await Promise.all([api(c1m.apiPort, 'POST', '/send/2', `m${i}`), api(c1m.apiPort, 'POST', '/send/4', `m${i}`)]);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await Promise.all([1, 2, 3, 4].map((id) => api(c1m!.apiPort, 'POST', `/send/${id}`, 'end')));
    await until('the sentinels', () => [idleChunked, busyChunked, idleSse, busySse].every((c) => c.messages.includes('end')));
    expect(idleChunked.messages.filter((m) => m === '').length).toBeGreaterThanOrEqual(2);
    expect(idleSse.comments).toBeGreaterThanOrEqual(2);
    expect(busyChunked.messages.filter((m) => m === '')).toEqual([]);
    expect(busySse.comments).toBe(0);
  });
});
