/** What docs/streams.md and docs/cli.md promise about streams and the CLI, checked from outside. */
import { createRequire } from 'node:module';
import net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { mintStreamToken } from '../server/auth.js';
import { api, runCli, spawnServer, startServer, stopChild, StreamClient, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m | undefined;
const sockets: net.Socket[] = [];
afterEach(() => {
  sockets.splice(0).forEach((s) => s.resetAndDestroy());
  c1m?.close();
  c1m = undefined;
});

/** A raw stream client: the bytes as they came, and the HTTP chunks parsed out of the body. */
function rawStream(port: number, id: number) {
  const socket = net.connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.on('error', () => {});
  let raw = Buffer.alloc(0);
  socket.on('data', (d) => (raw = Buffer.concat([raw, d])));
  socket.write(`GET /test/${id} HTTP/1.1\r\nHost: x\r\n\r\n`);
  return {
    socket,
    raw: () => raw,
    /** Chunk payloads; null for the terminating zero-length chunk. */
    chunks(): (string | null)[] {
      let rest = raw.toString('latin1');
      rest = rest.slice(rest.indexOf('\r\n\r\n') + 4);
      const out: (string | null)[] = [];
      // uWS writes each chunk as CRLF, size, CRLF, data: the CRLF that ends a chunk's data comes with the next chunk.
      for (let m; (m = /^(?:\r\n)?([0-9a-f]+)\r\n/.exec(rest)); ) {
        const size = parseInt(m[1], 16);
        if (rest.length < m[0].length + size) break;
        out.push(size === 0 ? null : rest.slice(m[0].length, m[0].length + size));
        rest = rest.slice(m[0].length + size);
      }
      return out;
    },
  };
}

describe('streams', () => {
  it('sends each message as its own HTTP chunk ending in a newline, also when several go out in one write', async () => {
    c1m = await startServer();
    const client = rawStream(c1m.port, 1);
    await until('welcome chunk', () => client.chunks().length === 1);
    for (const m of ['one', 'two', 'three']) c1m.router.send(1, m); // one turn: one corked write
    await until('three chunks', () => client.chunks().length === 4);
    expect(client.chunks()).toEqual(["Welcome, Url: '/test/1' Id: 1\n", 'one\n', 'two\n', 'three\n']);
  });

  it('a stream that stops reading while large messages are sent receives every byte once it reads again, and stays open past uWS\'s 10 s timeout', async () => {
    c1m = await startServer({ maxBacklog: 4 * 1024 * 1024, maxMessage: 1024 * 1024 });
    const sizes = [900_000, 200_000, 14_000];
    const clients = sizes.map((_, i) => rawStream(c1m!.port, i + 1));
    await until('welcome chunks', () => clients.every((c) => c.chunks().length === 1));
    clients.forEach((c) => c.socket.pause());
    sizes.forEach((size, i) => c1m!.router.send(i + 1, 'x'.repeat(size - 1)));
    await new Promise((r) => setTimeout(r, 2000)); // the client is away for 2 s: that is the scenario, not a wait for an event
    clients.forEach((c) => c.socket.resume());
    // Past 16 KiB a message goes out as several consecutive chunks (see CORK_BUFFER_SIZE).
    const body = (c: (typeof clients)[number]) => c.chunks().slice(1).join('');
    await until('every byte, with no further send', () => clients.every((c, i) => body(c).length === sizes[i]), 10_000);
    clients.forEach((c, i) => expect(body(c)).toBe(`${'x'.repeat(sizes[i] - 1)}\n`));
    await new Promise((r) => setTimeout(r, 12_000)); // past uWS's 10 s timeout
    expect(c1m.stats()).toMatchObject({ connections: 3, slowConsumerCloses: 0 });
    c1m.router.send(1, 'still here');
    await until('a later message', () => clients[0].chunks().at(-1) === 'still here\n');
  }, 30_000);

  it('reuses a slot freed at --max-connections', async () => {
    c1m = await startServer({ maxConnections: 1 });
    const first = await StreamClient.open(c1m.port, 1);
    expect((await fetch(`http://127.0.0.1:${c1m.port}/test/2`)).status).toBe(503);
    first.close();
    await until('logout', () => c1m!.stats().connections === 0);
    const second = await StreamClient.open(c1m.port, 2);
    expect(second.status).toBe(200);
    second.close();
  });

  it('refuses more than --max-streams-per-user streams for one user with 429', async () => {
    const server = await spawnServer(['--db', ':memory:', '--max-streams-per-user', '2']);
    try {
      const tabs = await Promise.all([1, 1].map((id) => StreamClient.open(server.port, id)));
      expect((await fetch(`http://127.0.0.1:${server.port}/test/1`)).status).toBe(429);
      expect((await StreamClient.open(server.port, 2)).status).toBe(200);
      tabs.forEach((t) => t.close());
    } finally {
      await stopChild(server.child);
    }
  });

  it('ends every stream with the terminating chunk on SIGTERM', async () => {
    const server = await spawnServer(['--db', ':memory:']);
    const clients = [1, 2].map((id) => rawStream(server.port, id));
    await until('welcome chunks', () => clients.every((c) => c.chunks().length === 1));
    const ended = clients.map((c) => new Promise((resolve) => c.socket.on('end', resolve)));
    await stopChild(server.child, 'SIGTERM');
    await Promise.all(ended);
    for (const c of clients) expect(c.chunks().at(-1)).toBeNull();
  });
});

describe('API and CLI', () => {
  it("accepts curl -d's form-encoded type as JSON", async () => {
    c1m = await startServer();
    const res = await api(c1m.apiPort, 'POST', '/subscriptions', '[[2,1]]', { 'content-type': 'application/x-www-form-urlencoded' });
    expect(res).toMatchObject({ status: 200, json: { added: 1 } });
  });

  it('takes its settings from C1M_* environment variables', async () => {
    const db = join(tempDir(), 'env.db');
    const server = await spawnServer([], { C1M_DB: db, C1M_TOKEN: 'env token', C1M_API_HOST: '127.0.0.2', C1M_STREAM_SECRET: 'env secret, at least 32 bytes long' });
    try {
      const stats = (headers: Record<string, string>) => fetch(`http://127.0.0.2:${server.apiPort}/stats`, { headers }).then((r) => r.status);
      expect(await stats({})).toBe(401);
      expect(await stats({ authorization: 'Bearer env token' })).toBe(200);
      expect((await fetch(`http://127.0.0.1:${server.port}/test/5`)).status).toBe(401);
      const client = await StreamClient.open(server.port, `5?token=${mintStreamToken('env secret, at least 32 bytes long', 5, 60)}`);
      expect(client.status).toBe(200);
      client.close();
      expect(server.output()).toContain(`"apiPort":${server.apiPort}`);
      expect((await runCli(['subs', 'get', '1'], { env: { C1M_DB: db } })).code).toBe(0);
    } finally {
      await stopChild(server.child);
    }
  });

  it('prints its version', async () => {
    const { version } = createRequire(import.meta.url)('../package.json') as { version: string };
    expect(await runCli(['--version'])).toMatchObject({ code: 0, stdout: `${version}\n` });
  });
});
