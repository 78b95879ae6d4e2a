/**
 * EventSource and WebSocket streams on the edges of a real `c1m cluster`
 * (nats-server, a router, 3 edges sharing one port): the same checks as the
 * single process, through the router's API and /stats.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { mintStreamToken } from '../server/auth.js';
import type { TransportStats } from '../server/stream.js';
import { api, openStream, stopChild, tempDir, type Transport } from './helpers.js';
import { until } from '../bench/until.js';

const SECRET = 'cluster transports secret, 32 bytes+';
const MAX_MESSAGE = 16 * 1024;
let cluster: ClusterProcess;
const clients: { close(): void }[] = [];

beforeAll(async () => {
  cluster = await spawnCluster(
    ['--edges', '3', '--db', `${tempDir()}/c1m.db`, '--stream-secret', SECRET, '--max-message', String(MAX_MESSAGE), '--max-backlog', String(64 * 1024), '--max-streams-per-user', '1'],
  );
  // 1 and 2 are friends; the rest have none.
  expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify([[1, 2], [2, 1]]))).status).toBe(200);
});

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  if (cluster) await stopChild(cluster.child);
});

const token = (id: number) => `?token=${mintStreamToken(SECRET, id, 600)}`;
const open = async (transport: Transport, id: number, query = token(id)) => {
  const client = await openStream(transport, cluster.port, id, query);
  clients.push(client);
  return client;
};
const send = async (user: number, text: string) => (await api(cluster.apiPort, 'POST', `/send/${user}`, text)).json?.delivered as number;
const transports = async () => ((await api(cluster.apiPort, 'GET', '/stats')).json as { transports: TransportStats }).transports;

describe.each(['sse', 'ws'] as const)('%s streams on a 3-edge cluster', (transport) => {
  const base = transport === 'sse' ? 100 : 200; // each transport its own users

  it('welcomes, and delivers to the addressed users only, line breaks and --max-message included', async () => {
    const [a, b, c] = await Promise.all([1, 2, base + 3].map((id) => open(transport, id)));
    expect([a, b, c].map((s) => s.status)).toEqual(Array(3).fill(transport === 'ws' ? 101 : 200));
    await until('the ping delivered to both streams', async () => { expect(await send(1, 'ping')).toBe(2); return true; });
    await until('ping', () => b.messages.includes('ping'));
    expect(await send(1, 'one\ntwo\r\nthree')).toBe(2);
    const large = 'L'.repeat(MAX_MESSAGE);
    expect(await send(2, large)).toBe(2);
    expect(await send(base + 3, 'sentinel')).toBe(1);
    await until('deliveries', () => c.messages.includes('sentinel') && [a, b].every((s) => s.messages.includes(large)));
    expect(c.messages).toEqual(['sentinel']);
    // An event's data lines join with '\n'; a WebSocket frame carries the bytes as sent.
    const lines = transport === 'sse' ? 'one\ntwo\nthree' : 'one\ntwo\r\nthree';
    for (const s of [a, b]) expect(s.messages.slice(-2)).toEqual([lines, large]);
    [a, b, c].forEach((s) => s.close());
    await until('the edge to count its streams closed', async () => { expect((await transports())[transport].open).toBe(0); return true; });
  });

  it('refuses a missing, wrong-user or expired token, and a second stream past the per-user cap', async () => {
    const id = base + 4;
    const refused = await Promise.all(['', token(id + 1), `?token=${mintStreamToken(SECRET, id, 60, Date.now() - 120_000)}`].map((q) => open(transport, id, q)));
    expect(refused.map((s) => s.status)).toEqual([401, 403, 403]);
    // One stream per user per edge: of six, at most one per edge opens.
    const tabs = await Promise.all(Array.from({ length: 6 }, () => open(transport, id + 10)));
    const opened = tabs.filter((s) => s.status === (transport === 'ws' ? 101 : 200)).length;
    expect(opened).toBeGreaterThanOrEqual(1);
    expect(opened).toBeLessThanOrEqual(3);
    expect(tabs.filter((s) => s.status === 429).length).toBe(6 - opened);
    await until('three auth failures counted', async () => { expect((await transports())[transport].authFailures).toBe(3); return true; });
    tabs.forEach((s) => s.close());
  });

  it('closes a blocked reader as a slow consumer on its edge, counted at the router', async () => {
    const id = base + 5;
    const socket = net.connect(cluster.port, '127.0.0.1');
    socket.on('error', () => {});
    const upgrade = transport === 'ws' ? 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' : '';
    socket.write(`GET /${transport}/${id}${token(id)} HTTP/1.1\r\nHost: x\r\n${upgrade}\r\n`);
    socket.pause();
    await until('the stream known to the router', async () => { expect(await send(id, 'are you there')).toBe(1); return true; });
    const message = 'x'.repeat(MAX_MESSAGE - 1);
    // Kernel buffers take a few MB first; bounded at 1,600 sends (25 MB).
    for (let sent = 0; sent < 1600 && (await send(id, message)) === 1; sent++);
    await until('the slow consumer counted', async () => { expect((await transports())[transport].slowConsumerCloses).toBe(1); return true; });
    socket.destroy();
  });
});
