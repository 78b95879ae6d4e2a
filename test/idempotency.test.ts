/**
 * Idempotency keys (issue 28: a backend's retry must never duplicate a message) on a real server: the same
 * Idempotency-Key for the same subject answers the first send's id with `duplicate: true` and delivers nothing again;
 * keys are per subject; bad keys and keys without a history are refused with nothing sent; a key survives a kill -9
 * of the server; the backend client retries a send whose answer was lost (the connection reset after the server kept
 * it) with the same key, a bounded number of times.
 */
import Database from 'better-sqlite3';
import net from 'node:net';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { C1mClient, type C1m } from '../index.js';
import { api, received, SseClient, spawnServer, startServer, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m | undefined;
const closing: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of closing.splice(0).reverse()) await close();
  c1m?.close();
  c1m = undefined;
});

const sse = async (port: number, user: number, query = '') => {
  const client = await SseClient.open(port, user, query);
  closing.push(() => client.close());
  return client;
};
const keyed = (port: number, subject: number | string, body: string, key: string) => api(port, 'POST', `/send/${subject}`, body, { 'idempotency-key': key });

it('answers the same key for the same subject with the first send\'s id and duplicate: true, delivering nothing again; keys are per subject', async () => {
  c1m = await startServer({ db: join(tempDir(), 'c1m.db') });
  const [one, two] = [await sse(c1m.port, 1), await sse(c1m.port, 2)];
  const first = await keyed(c1m.apiPort, 1, 'pay 5', 'order-17');
  expect(first).toMatchObject({ status: 200, json: { delivered: 1, id: expect.any(Number) } });
  expect(first.json.duplicate).toBeUndefined();
  const again = await keyed(c1m.apiPort, 1, 'pay 5', 'order-17');
  expect(again).toMatchObject({ status: 200, json: { delivered: 0, id: first.json.id, duplicate: true } });
  // The same key for another subject is another send.
  const other = await keyed(c1m.apiPort, 2, 'pay 5', 'order-17');
  expect(other).toMatchObject({ status: 200, json: { delivered: 1 } });
  expect(other.json.id).toBeGreaterThan(first.json.id);
  // A topic's keys as a user's.
  const topic = await keyed(c1m.apiPort, 'photo:9', 'a comment', 'order-17');
  expect(await keyed(c1m.apiPort, 'photo:9', 'a comment', 'order-17')).toMatchObject({ json: { delivered: 0, id: topic.json.id, duplicate: true } });
  const last = await api(c1m.apiPort, 'POST', '/send/1', 'after');
  await until('the message after', () => received(one).length === 2);
  expect(received(one)).toEqual([`${first.json.id} pay 5`, `${last.json.id} after`]);
  await until("2's message", () => received(two).length === 1);
  expect(c1m.stats().sends).toBe(4);
  // The key is in the file beside its message, written before the answer.
  const file = new Database(join(c1m.store.db.name.replace(/\.db$/, '.history.db')), { readonly: true });
  closing.push(() => file.close());
  expect(file.prepare('SELECT k.id, h.body FROM history_keys k JOIN history h USING (id) WHERE k.subject = 1 AND k.key = ?').get('order-17')).toEqual({ id: first.json.id, body: Buffer.from('pay 5') });
});

it('refuses a malformed key, and a key without a history, with a 400 saying why, sending nothing', async () => {
  c1m = await startServer();
  const one = await sse(c1m.port, 1);
  // (Bytes outside ASCII never reach c1m: uWebSockets.js drops them from a header's value; see docs/api.md.)
  for (const key of ['x'.repeat(65), 'has space', 'a/b', 'a"b', 'tab\there']) {
    const { status, json } = await keyed(c1m.apiPort, 1, 'm', key);
    expect(status, key).toBe(400);
    expect(json.error).toContain('bad Idempotency-Key');
    expect(json.error).toContain('1 to 64 of A-Z a-z 0-9 . _ : -');
  }
  expect(await keyed(c1m.apiPort, 1, 'm', 'x'.repeat(64))).toMatchObject({ status: 200, json: { delivered: 1 } });
  c1m.close();
  c1m = await startServer({ historySeconds: 0 });
  const { status, json } = await keyed(c1m.apiPort, 1, 'm', 'k');
  expect(status).toBe(400);
  expect(json.error).toMatch(/Idempotency-Key needs the message history.*--history-seconds above 0/);
  expect(c1m.stats().sends).toBe(0);
  expect((await api(c1m.apiPort, 'POST', '/send/1', 'no key')).status).toBe(200);
  expect(received(one)).toHaveLength(1);
});

it('after a kill -9 and a restart on the same store, a retry with the key answers the same id, and the stream has the message once', async () => {
  const db = join(tempDir(), 'c1m.db');
  const first = await spawnServer(['--db', db]);
  const before = await api(first.apiPort, 'POST', '/send/1', 'before');
  const kept = await keyed(first.apiPort, 1, 'kept, then the server died', 'retry-me');
  first.child.kill('SIGKILL');
  await new Promise((resolve) => first.child.once('exit', resolve));
  const second = await spawnServer(['--db', db]);
  closing.push(() => stopChild(second.child));
  const retry = await keyed(second.apiPort, 1, 'kept, then the server died', 'retry-me');
  expect(retry).toMatchObject({ status: 200, json: { delivered: 0, id: kept.json.id, duplicate: true } });
  const after = await api(second.apiPort, 'POST', '/send/1', 'after');
  const resumed = await sse(second.port, 1, `?lastEventId=${before.json.id}`);
  await until('the replay', () => received(resumed).length === 2);
  expect(received(resumed)).toEqual([`${kept.json.id} kept, then the server died`, `${after.json.id} after`]);
});

/**
 * A TCP proxy to the server whose first `lose` connections lose the answer: the request reaches the server, which keeps
 * the message, and the connection is reset when the answer comes back, as when a router dies between commit and answer
 * (`hang`: the answer is held back, and the connection left open, as behind a frozen router).
 */
async function answerLosingProxy(target: number, lose: number, how: 'reset' | 'hang' = 'reset') {
  let connections = 0;
  const open = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const losing = connections++ < lose;
    open.add(client.on('close', () => open.delete(client)));
    const server = net.connect(target, '127.0.0.1');
    client.pipe(server);
    server.on('data', (data) => {
      if (!losing) client.write(data);
      else if (how === 'reset') client.resetAndDestroy();
    });
    server.on('error', () => client.destroy());
    client.on('error', () => server.destroy());
    client.on('close', () => server.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  // The client's idle keep-alive connections are closed too: the proxy's close would wait for them.
  closing.push(() => new Promise((resolve) => (proxy.close(resolve), open.forEach((socket) => socket.destroy()))));
  return { port: (proxy.address() as net.AddressInfo).port, connections: () => connections };
}

it('the backend client retries a send whose answer was lost with the same key: kept once, answered with its id', async () => {
  c1m = await startServer({ db: join(tempDir(), 'c1m.db') });
  const one = await sse(c1m.port, 1);
  const proxy = await answerLosingProxy(c1m.apiPort, 2);
  const backend = new C1mClient({ url: `http://127.0.0.1:${proxy.port}`, retryDelayMs: 20 });
  const sent = await backend.send(1, 'charged once');
  expect(proxy.connections()).toBe(3);
  expect(sent).toEqual({ delivered: 0, id: expect.any(Number), duplicate: true });
  const next = await backend.send(1, 'next');
  expect(next.duplicate).toBeUndefined();
  await until('the next message', () => received(one).length === 2);
  expect(received(one)).toEqual([`${sent.id} charged once`, `${next.id} next`]);
  expect(c1m.stats().sends).toBe(2);
  // An answer that does not come within timeoutMs is asked for again, with the key.
  const hanging = await answerLosingProxy(c1m.apiPort, 1, 'hang');
  const patient = new C1mClient({ url: `http://127.0.0.1:${hanging.port}`, timeoutMs: 300, retryDelayMs: 20 });
  const late = await patient.send(1, 'answered late');
  expect(hanging.connections()).toBe(2);
  expect(late).toEqual({ delivered: 0, id: expect.any(Number), duplicate: true });

  // Bounded: a send whose answers are always lost fails after its retries, kept once all the same.
  const never = await answerLosingProxy(c1m.apiPort, Infinity);
  const given = new C1mClient({ url: `http://127.0.0.1:${never.port}`, retries: 2, retryDelayMs: 20 });
  await expect(given.send(1, 'lost answers', { key: 'mine-1' })).rejects.toThrow(TypeError);
  expect(never.connections()).toBe(3);
  expect(await keyed(c1m.apiPort, 1, 'lost answers', 'mine-1')).toMatchObject({ json: { delivered: 0, duplicate: true } });
  // Without keys (a server with no history refuses them), a send is tried once.
  const once = new C1mClient({ url: `http://127.0.0.1:${never.port}`, idempotent: false });
  await expect(once.send(1, 'tried once')).rejects.toThrow(TypeError);
  expect(never.connections()).toBe(4);
  await until('the last two', () => received(one).length === 5);
  expect(received(one).slice(2).map((m) => m.split(' ').slice(1).join(' '))).toEqual(['answered late', 'lost answers', 'tried once']);
});
