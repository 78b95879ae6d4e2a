import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { api, stalledStream, startServer, StreamClient } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m;
const clients: StreamClient[] = [];
const open = async (id: number | string) => {
  const client = await StreamClient.open(c1m.port, id);
  clients.push(client);
  return client;
};

afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
});

describe('GET /test/<id>', () => {
  it('answers 200 chunked with streaming headers and a welcome chunk', async () => {
    c1m = await startServer();
    const client = await open(123);
    expect(client.status).toBe(200);
    expect(client.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(client.headers['x-content-type-options']).toBe('nosniff');
    expect(client.headers['transfer-encoding']).toBe('chunked');
    expect(client.headers['cache-control']).toBe('no-cache');
    expect(client.headers['x-accel-buffering']).toBe('no');
    expect(client.lines).toEqual(["Welcome, Url: '/test/123' Id: 123"]);
    expect(client.ended).toBe(false);
  });

  it('answers 404 with a hint for ids that are not positive integers, and for other paths', async () => {
    c1m = await startServer();
    for (const path of ['/test/abc', '/test/0', '/test/-1', '/test/1.5', '/test/007', '/test/', '/elsewhere', '/test/1/2']) {
      const res = await fetch(`http://127.0.0.1:${c1m.port}${path}`);
      expect(res.status, path).toBe(404);
      expect(await res.text(), path).toContain('try /test/123');
    }
  });

  it('answers 404 naming the limit above --max-user-id: no such stream, retrying will not help', async () => {
    c1m = await startServer({ maxUserId: 1000 });
    const res = await fetch(`http://127.0.0.1:${c1m.port}/test/1001`);
    expect(res.status).toBe(404);
    expect(await res.text()).toContain('1000');
    const atTheLimit = await StreamClient.open(c1m.port, 1000);
    expect(atTheLimit.status).toBe(200);
    atTheLimit.close();
  });

  it('refuses streams past max connections with 503', async () => {
    c1m = await startServer({ maxConnections: 2 });
    await open(1);
    await open(2);
    const res = await fetch(`http://127.0.0.1:${c1m.port}/test/3`);
    expect(res.status).toBe(503);
    expect(await res.text()).toContain('server full');
  });
});

// Subscribers, slow consumers and the shutdown, which every transport shares: test/transports.test.ts, over all three.
describe('router.send', () => {
  it('delivers once per connection when a subscription is added twice or to oneself', async () => {
    c1m = await startServer();
    expect(c1m.store.addSubscriptions([[2, 1]])).toBe(1);
    expect(c1m.store.addSubscriptions([[2, 1], [2, 1], [1, 1]])).toBe(1);
    const [u1, u2] = await Promise.all([1, 2].map(open));
    expect(c1m.router.send(1, 'once')).toBe(2);
    c1m.router.send(2, 'sentinel'); // reaches 2 only, after anything sent before it
    c1m.router.send(1, 'sentinel'); // reaches 1 and 2
    await until('sentinels', () => u1.messages.includes('sentinel') && u2.messages.filter((m) => m === 'sentinel').length === 2);
    expect(u1.messages).toEqual(['once', 'sentinel']);
    expect(u2.messages).toEqual(['once', 'sentinel', 'sentinel']);
  });

  it('delivers to every connection of the same user, in order', async () => {
    c1m = await startServer();
    const tabs = await Promise.all([7, 7, 7].map(open));
    for (let i = 0; i < 5; i++) expect(c1m.router.send(7, `m${i}`)).toBe(3);
    await until('five messages on each tab', () => tabs.every((t) => t.messages.length === 5));
    for (const t of tabs) expect(t.messages).toEqual(['m0', 'm1', 'm2', 'm3', 'm4']);
  });

  // A send racing the disconnect, driven deterministically: test/stream.test.ts.
  it('logs a connection out when its client goes away, and keeps delivering to the user\'s other streams', async () => {
    c1m = await startServer();
    const [stay, leave] = await Promise.all([8, 8].map(open));
    expect(c1m.stats().connections).toBe(2);
    leave.close();
    await until('logout', () => c1m.stats().connections === 1);
    expect(c1m.router.send(8, 'after')).toBe(1);
    await until('delivery to the remaining tab', () => stay.messages.includes('after'));
    expect(c1m.stats().users).toBe(1);
    stay.close();
    await until('last logout', () => c1m.stats().connections === 0);
    expect(c1m.router.send(8, 'gone')).toBe(0);
    expect(c1m.registry.isConnected(8)).toBe(false);
  });

  it('drops a client whose socket stays blocked, even when no more messages come', async () => {
    c1m = await startServer({ maxBacklog: 1024 ** 3 });
    const stalled = await stalledStream(c1m, 'chunked', 1);
    // Enough to fill the kernel's socket buffers (a few MB on loopback), then silence.
    const message = 'x'.repeat(64 * 1024);
    for (let i = 0; i < 320; i++) c1m.router.send(1, message);
    await until('uWS to drop the blocked stream', () => c1m.stats().connections === 0, 30_000);
    expect(c1m.stats().slowConsumerCloses).toBe(1);
    stalled.destroy();
  });

  it('writes a heartbeat, an empty line, to every stream, idle or busy, when asked to', async () => {
    c1m = await startServer({ heartbeatSeconds: 0.05 });
    const [idle, busy] = await Promise.all([1, 2].map(open));
    c1m.router.send(2, 'busy');
    await until('two heartbeats on each stream', () => [idle, busy].every((c) => c.messages.filter((m) => m === '').length >= 2));
    expect(busy.messages.filter((m) => m !== '')).toEqual(['busy']);
  });
});

describe('backend API send', () => {
  it('POST /send/<id> pushes the body and returns the delivered count', async () => {
    c1m = await startServer();
    c1m.store.addSubscriptions([[2, 1]]);
    const [u1, u2] = await Promise.all([1, 2].map(open));
    const res = await api(c1m.apiPort, 'POST', '/send/1', 'hello, friends');
    expect(res).toMatchObject({ status: 200, json: { delivered: 2 } });
    await until('deliveries', () => u1.messages.length === 1 && u2.messages.length === 1);
    expect(u2.messages).toEqual(['hello, friends']);
    expect(c1m.stats()).toMatchObject({ connections: 2, users: 2, sends: 1, chunks: 2, bytes: 30, slowConsumerCloses: 0 });
  });
});

it('close() twice is harmless: the second call does nothing', async () => {
  const server = await startServer();
  server.close();
  server.close();
  const again = await startServer();
  expect(again.stats().connections).toBe(0);
  again.close();
});
