/**
 * 2,000 readers that never read, all subscribed to one hub, receive
 * maximum-size messages faster than any socket drains: the server's memory
 * must stay bounded by --max-backlog per stream, whatever the burst.
 * Load from 127.0.11.x, closed with RST.
 */
import net from 'node:net';
import { afterAll, expect, it } from 'vitest';
import { rssOf } from '../loadgen/server-process.js';
import { api, spawnServer, stopChild } from './helpers.js';

const READERS = 2000;
const MAX_MESSAGE = 32 * 1024;
const MAX_BACKLOG = 64 * 1024;
const MESSAGES = 32; // 1 MiB per reader: 2 GiB in all if nothing bounded it
const sockets: net.Socket[] = [];
afterAll(() => sockets.splice(0).forEach((s) => s.resetAndDestroy()));

it('keeps RSS bounded while 2,000 stalled readers receive maximum-size messages', async () => {
  const server = await spawnServer(['--db', ':memory:', '--max-message', String(MAX_MESSAGE), '--max-backlog', String(MAX_BACKLOG)]);
  try {
    const readers = Array.from({ length: READERS }, (_, i) => i + 2);
    expect((await api(server.apiPort, 'POST', '/subscriptions', JSON.stringify(readers.map((r) => [r, 1])))).json).toEqual({ added: READERS });
    for (let i = 0; i < READERS; i += 200) {
      await Promise.all(
        readers.slice(i, i + 200).map(
          (id) =>
            new Promise<void>((resolve) => {
              const socket = net.connect({ port: server.port, host: '127.0.0.1', localAddress: `127.0.11.${1 + (id % 250)}` }, () => {
                socket.write(`GET /test/${id} HTTP/1.1\r\nHost: x\r\n\r\n`);
              });
              socket.once('data', () => {
                socket.pause(); // and never read again
                resolve();
              });
              socket.on('error', () => {});
              sockets.push(socket);
            }),
        ),
      );
    }
    expect((await api(server.apiPort, 'GET', '/stats')).json.connections).toBe(READERS);
    const before = rssOf(server.child.pid!);

    // Pipelined on one connection, so that several messages reach the server in one read, one event-loop turn.
    const sender = net.connect(server.apiPort, '127.0.0.1');
    sockets.push(sender);
    const message = 'm'.repeat(MAX_MESSAGE);
    let answers = '';
    const answered = new Promise<void>((resolve) =>
      sender.on('data', (d) => {
        answers += d;
        if (answers.split('HTTP/1.1 200').length - 1 === MESSAGES) resolve();
      }),
    );
    for (let i = 0; i < MESSAGES; i++) sender.write(`POST /send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: ${MAX_MESSAGE}\r\n\r\n${message}`);
    await answered;
    const stats = (await api(server.apiPort, 'GET', '/stats')).json;
    const growth = rssOf(server.child.pid!) - before;
    console.log(`RSS +${(growth / 2 ** 20).toFixed(1)} MiB (${Math.round(growth / READERS)} B per reader) for ${READERS} stalled readers x ${MESSAGES} x ${MAX_MESSAGE / 1024} KiB; slow consumers closed: ${stats.slowConsumerCloses}`);
    // Bound: 8 KiB per reader, a quarter of one message. The messages are shared, so what a stream costs in the burst is
    // bookkeeping: measured 1,500-3,400 B per reader (2.9-6.5 MiB in all, docs/streams.md: 6 MiB), so this leaves 2.5x for noise.
    // A stream that kept a copy of even one message would grow the server by 62.5 MiB; with no backlog bound it grew by 395 MiB.
    expect(growth).toBeLessThan(READERS * (MAX_MESSAGE / 4));
    expect(stats.slowConsumerCloses).toBeGreaterThan(0);
  } finally {
    sockets.splice(0).forEach((s) => s.resetAndDestroy());
    await stopChild(server.child);
  }
}, 60_000);
