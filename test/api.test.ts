import { pack } from 'msgpackr';
import { execSync } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { RESERVED_FDS } from '../server/limits.js';
import { api, startServer, StreamClient } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m;
afterEach(() => c1m?.close());

const JSON_TYPE = { 'content-type': 'application/json' };
const MSGPACK_TYPE = { 'content-type': 'application/msgpack' };

describe('backend API', () => {
  it('serves GET /metrics in Prometheus format: streams, sends, chunks and the send-to-write histogram', async () => {
    c1m = await startServer();
    c1m.store.addSubscriptions([[2, 1]]);
    const clients = [await StreamClient.open(c1m.port, 1), await StreamClient.open(c1m.port, 2)];
    try {
      expect((await api(c1m.apiPort, 'POST', '/send/1', 'hello')).json).toMatchObject({ delivered: 2 });
      await until('hello at both', () => clients.every((c) => c.messages.includes('hello')));
      const { status, text } = await api(c1m.apiPort, 'GET', '/metrics');
      expect(status).toBe(200);
      expect(text).toMatch(/^c1m_streams 2$/m);
      expect(text).toMatch(/^c1m_users 2$/m);
      expect(text).toMatch(/^c1m_sends_total 1$/m);
      expect(text).toMatch(/^c1m_chunks_total 2$/m);
      expect(text).toMatch(/^c1m_send_to_write_seconds_count 1$/m);
      expect(text).toMatch(/^c1m_send_to_write_seconds_bucket\{le="\+Inf"\} 1$/m);
      expect(text).toMatch(/^c1m_process_resident_memory_bytes \d+/m);
    } finally {
      for (const c of clients) c.close();
    }
  });

  it('adds, lists and removes subscriptions as JSON or msgpack', async () => {
    c1m = await startServer();
    const port = c1m.apiPort;
    expect(await api(port, 'POST', '/subscriptions', JSON.stringify([[2, 1], [3, 1], [2, 1]]), JSON_TYPE)).toMatchObject({
      status: 200,
      json: { added: 2 },
    });
    expect(await api(port, 'POST', '/subscriptions', pack([[4, 1], [2, 3]]), MSGPACK_TYPE)).toMatchObject({ json: { added: 2 } });
    expect((await api(port, 'GET', '/subscribers/1')).json).toEqual([2, 3, 4]);
    expect((await api(port, 'GET', '/subscriptions/2')).json).toEqual([1, 3]);
    expect(await api(port, 'DELETE', '/subscriptions', pack([[3, 1], [9, 9]]), MSGPACK_TYPE)).toMatchObject({ json: { removed: 1 } });
    expect(await api(port, 'DELETE', '/subscriptions', JSON.stringify([[4, 1]]), JSON_TYPE)).toMatchObject({ json: { removed: 1 } });
    expect((await api(port, 'GET', '/subscribers/1')).json).toEqual([2]);
    expect((await api(port, 'GET', '/subscribers/77')).json).toEqual([]);
  });

  it('rejects malformed bodies, wrong shapes and bad ids with a message, changing nothing', async () => {
    c1m = await startServer({ maxBody: 1000, maxMessage: 500 });
    const port = c1m.apiPort;
    c1m.store.addSubscriptions([[2, 1]]);
    const bad: [string, string, string | Uint8Array, Record<string, string>, number, string][] = [
      ['POST', '/subscriptions', '[[3, 1], [4', JSON_TYPE, 400, 'malformed JSON'],
      ['POST', '/subscriptions', '{"a": 1}', JSON_TYPE, 400, 'list of'],
      ['POST', '/subscriptions', '[[3, 1], [4, 0]]', JSON_TYPE, 400, 'pair 1'],
      ['POST', '/subscriptions', '[[3, 1], [4, 1.5]]', JSON_TYPE, 400, 'pair 1'],
      ['POST', '/subscriptions', '[[3, 1], ["4", 1]]', JSON_TYPE, 400, 'pair 1'],
      ['POST', '/subscriptions', '[[3, 1], [4, 1, 5]]', JSON_TYPE, 400, 'pair 1'],
      ['POST', '/subscriptions', '[[3, 1], [4, 99999999999999999999]]', JSON_TYPE, 400, 'pair 1'],
      ['POST', '/subscriptions', new Uint8Array([0x92, 0x92, 0x03]), MSGPACK_TYPE, 400, 'msgpack'],
      ['POST', '/subscriptions', pack([[3, 1], [-4, 1]]), MSGPACK_TYPE, 400, 'pair 1'],
      ['POST', '/subscriptions', '3 1', { 'content-type': 'text/csv' }, 415, 'unsupported content type'],
      ['DELETE', '/subscriptions', '[[2, 1], [2]]', JSON_TYPE, 400, 'pair 1'],
      ['POST', '/subscriptions', JSON.stringify(Array.from({ length: 200 }, () => [5, 1])), JSON_TYPE, 413, '1000 bytes'],
      ['POST', '/send/abc', 'hi', {}, 400, 'not a subject'],
      ['POST', '/send/0', 'hi', {}, 400, 'not a user id'],
      ['POST', '/send/2000000', 'hi', {}, 400, 'above the limit'],
      ['POST', '/send/1', '', {}, 400, 'empty message'],
      ['POST', '/send/1', 'x'.repeat(501), {}, 413, '500 bytes'], // --max-message, not --max-body, bounds a message
      ['GET', '/subscribers/x', '', {}, 400, 'not a subject'],
      ['GET', '/nope', '', {}, 404, 'no such endpoint'],
    ];
    for (const [method, path, body, headers, status, message] of bad) {
      const res = await api(port, method, path, method === 'GET' ? undefined : body, headers);
      expect(res.status, `${method} ${path} ${body}`).toBe(status);
      expect(res.json?.error, `${method} ${path}`).toContain(message);
    }
    expect(c1m.store.getSubscribers(1)).toEqual([2]);
    expect(c1m.store.count()).toBe(1);
    expect(c1m.stats().sends).toBe(0);
  });

  it('refuses a body that streams past the limit without a Content-Length', async () => {
    c1m = await startServer({ maxMessage: 1000 });
    const body = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 10; i++) controller.enqueue(new TextEncoder().encode('y'.repeat(500)));
        controller.close();
      },
    });
    const res = await fetch(`http://127.0.0.1:${c1m.apiPort}/send/1`, { method: 'POST', body, duplex: 'half' } as RequestInit);
    expect(res.status).toBe(413);
    expect(c1m.stats().sends).toBe(0);
  });

  it('delivers every message intact although uWS reuses the memory a body arrives in: pipelined sends, and a body in two pieces', async () => {
    c1m = await startServer();
    const client = await StreamClient.open(c1m.port, 1);
    const post = (body: string) => `POST /send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    const socket = connect(c1m.apiPort, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(['first', 'second', 'third'].map(post).join(''));
    await until('the pipelined sends', () => client.messages.length === 3);
    const split = post('fourth, in two pieces');
    await new Promise((resolve) => socket.write(split.slice(0, -10), resolve));
    // Sentinel: the server runs on this thread's event loop, so its answer to a request sent once the first piece was in
    // the kernel reaches us only after the poll that read that piece; the rest then arrives in a second read.
    expect((await api(c1m.apiPort, 'GET', '/stats')).json.sends).toBe(3);
    socket.write(split.slice(-10));
    await until('the split send', () => client.messages.length === 4);
    expect(client.messages).toEqual(['first', 'second', 'third', 'fourth, in two pieces']);
    socket.destroy();
    client.close();
  });

  it('enforces the bearer token when one is set', async () => {
    c1m = await startServer({ token: 's3cret' });
    const client = await StreamClient.open(c1m.port, 1);
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: 's3cret' }]) {
      const res = await api(c1m.apiPort, 'POST', '/send/1', 'hi', headers);
      expect(res.status).toBe(401);
      expect(res.json.error).toContain('token');
    }
    expect((await api(c1m.apiPort, 'GET', '/stats')).status).toBe(401);
    expect(c1m.stats().sends).toBe(0);
    const ok = await api(c1m.apiPort, 'POST', '/send/1', 'hi', { authorization: 'Bearer s3cret' });
    expect(ok).toMatchObject({ status: 200, json: { delivered: 1 } });
    await until('delivery', () => client.messages[0] === 'hi');
    client.close();
  });

  it('reports stats: the streams it may hold are the open-file limit less the reserve, and its uptime grows', async () => {
    const startedAt = Date.now();
    c1m = await startServer();
    const client = await StreamClient.open(c1m.port, 5);
    await api(c1m.apiPort, 'POST', '/send/5', 'abc');
    await until('delivery', () => client.messages.length === 1);
    const { json } = await api(c1m.apiPort, 'GET', '/stats');
    expect(json).toMatchObject({ connections: 1, users: 1, sends: 1, chunks: 1, bytes: 4, slowConsumerCloses: 0 });
    expect(json.memory.rss).toBeGreaterThan(1e6);
    // The soft limit as a child of this process inherits it, read apart from the server's own code.
    const openFiles = Number(execSync('ulimit -n', { shell: '/bin/sh', encoding: 'utf8' }));
    expect(json.maxConnections).toBe(openFiles - RESERVED_FDS);
    expect(json.uptimeSeconds).toBeLessThanOrEqual(Math.ceil((Date.now() - startedAt) / 1000));
    await until('uptimeSeconds to grow', async () => { expect((await api(c1m.apiPort, 'GET', '/stats')).json.uptimeSeconds).toBeGreaterThan(json.uptimeSeconds); return true; }, 10_000, 100);
    client.close();
  });

  it('is not reachable on the public port, and streams are not on the API port', async () => {
    c1m = await startServer();
    expect((await api(c1m.port, 'POST', '/send/1', 'hi')).status).toBe(404);
    expect((await api(c1m.port, 'GET', '/stats')).status).toBe(404);
    expect((await api(c1m.apiPort, 'GET', '/test/1')).status).toBe(404);
  });
});
