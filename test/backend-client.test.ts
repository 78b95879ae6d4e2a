/**
 * The backend client (`C1mClient`, exported by the package) against a real
 * c1m server: sends, subscriptions, stream tokens the server accepts, and
 * each error class.
 */
import Database from 'better-sqlite3';
import http from 'node:http';
import { afterEach, expect, it } from 'vitest';
import { C1mClient, C1mError, C1mRateLimited, C1mTooLarge, C1mUnauthorized, C1mUnavailable, type C1m } from '../index.js';
import { openStream, SseClient, startServer, tempDir, WsClient } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m;
const clients: { close(): void }[] = [];
afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
});
const client = (options: Partial<ConstructorParameters<typeof C1mClient>[0]> = {}) => new C1mClient({ url: `http://127.0.0.1:${c1m.apiPort}/`, ...options });

it('manages subscriptions and sends one message or many', async () => {
  c1m = await startServer({ token: 'api secret' });
  const backend = client({ token: 'api secret' });
  expect(await backend.subscribe([[2, 1], [3, 1], [2, 1]])).toBe(2);
  expect(await backend.subscribers(1)).toEqual([2, 3]);
  expect(await backend.subscriptions(2)).toEqual([1]);
  expect(await backend.unsubscribe([[3, 1], [4, 1]])).toBe(1);
  const [u1, u2] = await Promise.all([1, 2].map((id) => openStream('sse', c1m.port, id)));
  clients.push(u1, u2);
  expect(await backend.send(1, 'hello')).toEqual({ delivered: 2, id: expect.any(Number) });
  const many = Array.from({ length: 40 }, (_, i) => ({ user: 2, message: `m${i}` }));
  const sent = await backend.sendMany(many);
  expect(sent.map((s) => s.delivered)).toEqual(Array(40).fill(1));
  expect(new Set(sent.map((s) => s.id)).size).toBe(40);
  await until('every message', () => u2.messages.length === 41);
  expect(new Set(u2.messages)).toEqual(new Set(['hello', ...many.map((m) => m.message)]));
  expect(await backend.stats()).toMatchObject({ sends: 41 });
});

it('mints stream tokens that the server accepts on every transport', async () => {
  c1m = await startServer({ streamSecret: 'stream secret of at least 32 bytes' });
  const backend = client({ streamSecret: 'stream secret of at least 32 bytes' });
  const sse = (await SseClient.open(c1m.port, 7, `?token=${backend.streamToken(7, 60)}`)) as SseClient;
  const ws = await WsClient.open(c1m.port, 7, '', `c1m, token.${backend.streamToken(7)}`);
  clients.push(sse, ws);
  expect([sse.status, ws.status]).toEqual([200, 101]);
  const other = await SseClient.open(c1m.port, 8, `?token=${backend.streamToken(7)}`);
  clients.push(other);
  expect(other.status).toBe(403);
  expect(() => client().streamToken(7)).toThrow(/streamSecret/);
});

it('throws a typed error for 401, 413, 429 and 503, with the server\'s reason', async () => {
  const db = `${tempDir()}/c1m.db`;
  c1m = await startServer({ token: 'right', maxMessage: 10, db });
  await expect(client({ token: 'wrong' }).send(1, 'hi')).rejects.toThrow(C1mUnauthorized);
  const tooLarge = await client({ token: 'right' }).send(1, 'x'.repeat(11)).catch((e: C1mError) => e);
  expect(tooLarge).toBeInstanceOf(C1mTooLarge);
  expect(tooLarge).toMatchObject({ status: 413, message: expect.stringContaining('larger than 10 bytes') });

  // Another process's write lock on the store: the server waits its busy timeout, changes nothing, answers 503.
  const other = new Database(db);
  other.exec('BEGIN EXCLUSIVE');
  try {
    await expect(client({ token: 'right' }).subscribe([[1, 2]])).rejects.toThrow(C1mUnavailable);
  } finally {
    other.exec('ROLLBACK');
    other.close();
  }
  expect(await client({ token: 'right' }).subscribe([[1, 2]])).toBe(1);

  // c1m has no rate limit of its own: a 429 comes from a proxy in front of it, answered here by a plain HTTP server.
  const proxy = http.createServer((_, res) => res.writeHead(429, { 'content-type': 'text/plain' }).end('slow down\n'));
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  try {
    const limited = await new C1mClient({ url: `http://127.0.0.1:${(proxy.address() as { port: number }).port}` }).send(1, 'hi').catch((e: C1mError) => e);
    expect(limited).toBeInstanceOf(C1mRateLimited);
    expect(limited).toMatchObject({ status: 429, message: 'c1m API 429: slow down' });
  } finally {
    proxy.close();
  }
});
