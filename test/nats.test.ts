/**
 * cluster/nats.ts, c1m's own NATS client: its parser on hand-made protocol
 * bytes, and the client against a real nats-server on a loopback port (and a
 * fake server for the PING liveness check).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { NatsClient, Parser, type ParserHandler } from '../cluster/nats.js';
import { freePort } from '../cluster/supervisor.js';
import { spawnNatsServer } from '../loadgen/server-process.js';
import { until } from '../bench/until.js';

const HOST = '127.0.0.1';

type Event = [string, ...unknown[]];
function recorder(): { events: Event[]; handler: ParserHandler } {
  const events: Event[] = [];
  return {
    events,
    handler: {
      message: (sid, subject, reply, data, status) => events.push(['msg', sid, subject, reply, Buffer.from(data).toString(), status]),
      info: (info) => events.push(['info', info.max_payload]),
      ping: () => events.push(['ping']),
      pong: () => events.push(['pong']),
      error: (message) => events.push(['error', message]),
    },
  };
}

describe('Parser', () => {
  const stream = Buffer.from(
    'INFO {"server_id":"x","max_payload":1048576}\r\n' +
      'MSG a.b 1 5\r\nhello\r\n' +
      'MSG a.b 2 _INBOX.x.1 8\r\nwith\r\nlf\r\n' +
      'MSG empty 3 0\r\n\r\n' +
      'HMSG _INBOX.x.2 4 16 16\r\nNATS/1.0 503\r\n\r\n\r\n' +
      'HMSG h 5 r 18 21\r\nNATS/1.0\r\nK: v\r\n\r\nabc\r\n' +
      'PING\r\nPONG\r\n+OK\r\n' +
      "-ERR 'Permissions Violation'\r\n",
  );
  const expected: Event[] = [
    ['info', 1048576],
    ['msg', 1, 'a.b', undefined, 'hello', undefined],
    ['msg', 2, 'a.b', '_INBOX.x.1', 'with\r\nlf', undefined],
    ['msg', 3, 'empty', undefined, '', undefined],
    ['msg', 4, '_INBOX.x.2', undefined, '', '503'],
    ['msg', 5, 'h', 'r', 'abc', undefined],
    ['ping'],
    ['pong'],
    ['error', 'Permissions Violation'],
  ];

  test('one chunk holding many messages; payloads are views of the chunk, not copies', () => {
    const { events, handler } = recorder();
    const views: Uint8Array[] = [];
    new Parser({ ...handler, message: (...args) => (views.push(args[3]), handler.message(...args)) }).push(stream);
    expect(events).toEqual(expected);
    expect(views.every((v) => v.buffer === stream.buffer)).toBe(true);
  });

  test('split into two chunks at every position', () => {
    for (let at = 1; at < stream.length; at++) {
      const { events, handler } = recorder();
      const parser = new Parser(handler);
      parser.push(stream.subarray(0, at));
      parser.push(stream.subarray(at));
      expect(events, `split at ${at}`).toEqual(expected);
    }
  });

  test('one byte at a time', () => {
    const { events, handler } = recorder();
    const parser = new Parser(handler);
    for (let i = 0; i < stream.length; i++) parser.push(stream.subarray(i, i + 1));
    expect(events).toEqual(expected);
  });
});

const startServer = (port: number) => spawnNatsServer(HOST, port);

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  process.kill(child.pid!, 'SIGKILL');
  await exited;
}

/** Messages a subscription received, as Buffers, with their reply subjects. */
function collect(client: NatsClient, subject: string, queue?: string) {
  const got: { data: Buffer; reply?: string }[] = [];
  client.subscribe(subject, (data, reply) => got.push({ data: Buffer.from(data), reply }), queue);
  return got;
}

/** The round trip of a PING: everything sent before it has been handled by the server. */
const settle = async (client: NatsClient) => {
  await client.request('settle.none', new Uint8Array(0), 2000).catch(() => undefined);
};

describe('NatsClient with nats-server', () => {
  let port: number;
  let server: ChildProcess;
  const clients: NatsClient[] = [];
  const connect = async (persistent = false, options: { reconnected?: () => void; warning?: (m: string) => void } = {}) => {
    const client = await NatsClient.connect([`nats://${HOST}:${port}`], { name: 'test', persistent, ...options });
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    port = await freePort(HOST);
    server = await startServer(port);
  });

  afterAll(async () => {
    for (const client of clients) await client.close();
    await stopServer(server);
  });

  test('publish and subscribe: binary payloads of 0 bytes to ~900 KB, in order, with reply subjects', async () => {
    const [a, b] = [await connect(), await connect()];
    expect(a.server).toBe(`${HOST}:${port}`);
    const got = collect(b, 'bin.>');
    await settle(b);
    const payloads = [0, 1, 300, 65_536, 900_000].map((n) => randomBytes(n));
    payloads.forEach((p, i) => a.publish(`bin.${i}`, p, i === 2 ? 'reply.here' : undefined));
    await until('every payload', () => { expect(got).toHaveLength(payloads.length); return true; });
    expect(got.map((m) => m.data.length)).toEqual(payloads.map((p) => p.length));
    expect(got.every((m, i) => m.data.equals(payloads[i]))).toBe(true); // toEqual on 900 KB takes seconds
    expect(got.map((m) => m.reply)).toEqual([undefined, undefined, 'reply.here', undefined, undefined]);
  });

  test('thousands of messages written in one turn arrive whole and in order', async () => {
    const [a, b] = [await connect(), await connect()];
    const got = collect(b, 'many');
    await settle(b);
    for (let i = 0; i < 5000; i++) a.publish('many', Buffer.from(`message ${i} ${'x'.repeat(i % 97)}`));
    await until('5000 messages', () => { expect(got).toHaveLength(5000); return true; });
    got.forEach((m, i) => expect(m.data.toString()).toBe(`message ${i} ${'x'.repeat(i % 97)}`));
  });

  test('a queue group hands each message to one member', async () => {
    const [pub, s1, s2] = [await connect(), await connect(), await connect()];
    const [g1, g2] = [collect(s1, 'work', 'workers'), collect(s2, 'work', 'workers')];
    await Promise.all([settle(s1), settle(s2)]);
    for (let i = 0; i < 200; i++) pub.publish('work', Buffer.from(String(i)));
    await until('200 messages across the group', () => { expect(g1.length + g2.length).toBe(200); return true; });
    const all = [...g1, ...g2].map((m) => Number(m.data.toString())).sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(g1.length > 0 && g2.length > 0).toBe(true);
  });

  test('a queue member that unsubscribes gets no more: the other member takes every later message', async () => {
    const [pub, s1, s2] = [await connect(), await connect(), await connect()];
    const [g1, g2] = [collect(s1, 'handed', 'workers'), collect(s2, 'handed', 'workers')];
    await Promise.all([settle(s1), settle(s2)]);
    s1.unsubscribe('handed');
    await settle(s1);
    const before = g1.length;
    for (let i = 0; i < 200; i++) pub.publish('handed', Buffer.from(String(i)));
    await until('200 messages on g2', () => { expect(g2).toHaveLength(200); return true; });
    expect(g1).toHaveLength(before);
  });

  test('request and reply; no responders fails at once; a silent responder times out', async () => {
    const [client, responder] = [await connect(), await connect()];
    responder.subscribe('echo', (data, reply) => responder.publish(reply!, Buffer.concat([Buffer.from('re: '), data])));
    responder.subscribe('silent', () => {});
    await settle(responder);
    expect(Buffer.from(await client.request('echo', Buffer.from('hi'), 2000)).toString()).toBe('re: hi');
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => client.request('echo', Buffer.from(String(i)), 2000)));
    expect(replies.map((r) => Buffer.from(r).toString())).toEqual(Array.from({ length: 20 }, (_, i) => `re: ${i}`));

    let started = performance.now();
    await expect(client.request('nobody.listens', Buffer.from('?'), 5000)).rejects.toThrow(/no responders on nobody.listens/);
    expect(performance.now() - started).toBeLessThan(500);

    started = performance.now();
    await expect(client.request('silent', Buffer.from('?'), 300)).rejects.toThrow(/no reply from silent within 300 ms/);
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
  });

  test("a payload over the server's max_payload is refused", async () => {
    const client = await connect();
    expect(() => client.publish('big', new Uint8Array(1024 * 1024 + 1))).toThrow(/1048577 bytes is over the NATS server's max_payload \(1048576\)/);
    client.publish('big', new Uint8Array(1024 * 1024)); // exactly the limit is fine
  });

  test('a one-off connection to a dead port fails at once', async () => {
    const dead = await freePort(HOST);
    const started = performance.now();
    await expect(NatsClient.connect([`nats://${HOST}:${dead}`], { name: 'test', persistent: false })).rejects.toThrow(/cannot connect to NATS at 127.0.0.1:\d+: connect ECONNREFUSED/);
    expect(performance.now() - started).toBeLessThan(500);
  });

  test('nats-server killed and restarted on the same port: reconnects, subscriptions still work, publishes made meanwhile arrive', async () => {
    let reconnects = 0;
    const warnings: string[] = [];
    const a = await connect(true, { reconnected: () => reconnects++, warning: (m) => warnings.push(m) });
    const b = await connect(true);
    const mine = collect(a, 'mine');
    const fromB = collect(a, 'from.b');
    await settle(a);

    await stopServer(server);
    await until('the lost connection warned', () => { expect(warnings.some((w) => w.includes('lost the connection'))).toBe(true); return true; });
    for (let i = 0; i < 100; i++) a.publish('mine', Buffer.from(`while down ${i}`));
    server = await startServer(port);

    await until('the reconnect', () => { expect(reconnects).toBe(1); return true; });
    await until('the 100 messages sent while down', () => { expect(mine).toHaveLength(100); return true; });
    expect(mine.map((m) => m.data.toString())).toEqual(Array.from({ length: 100 }, (_, i) => `while down ${i}`));
    await until(
      'a message from b after the reconnect',
      async () => {
        b.publish('from.b', Buffer.from('after'));
        await settle(b);
        expect(fromB.length).toBeGreaterThan(0);
        return true;
      },
    );
    expect(a.server).toBe(`${HOST}:${port}`);
  });
});

describe('NatsClient liveness', () => {
  test('close() returns within its timeout when the server never finishes the close', async () => {
    const sockets: net.Socket[] = [];
    // Answers the handshake, then ignores everything, the client's FIN included (half-open, like a vanished host).
    const fake = net.createServer({ allowHalfOpen: true }, (socket) => {
      sockets.push(socket);
      socket.write('INFO {"server_id":"fake","max_payload":1048576}\r\n');
      socket.once('data', () => socket.write('PONG\r\n'));
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => fake.listen(0, HOST, resolve));
    const { port } = fake.address() as net.AddressInfo;
    try {
      const client = await NatsClient.connect([`nats://${HOST}:${port}`], { name: 'test', persistent: false });
      const started = performance.now();
      await client.close();
      expect(performance.now() - started).toBeLessThan(3000);
      expect(client.isClosed).toBe(true);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => fake.close(resolve));
    }
  });

  test('a server that stops answering PINGs is noticed and the client reconnects', async () => {
    let connections = 0;
    const sockets: net.Socket[] = [];
    // Answers the handshake's PING on each connection, then nothing.
    const fake = net.createServer((socket) => {
      connections++;
      sockets.push(socket);
      let answered = false;
      socket.write('INFO {"server_id":"fake","max_payload":1048576}\r\n');
      socket.on('data', (data) => {
        if (!answered && data.includes('PING\r\n')) {
          answered = true;
          socket.write('PONG\r\n');
        }
      });
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => fake.listen(0, HOST, resolve));
    const { port } = fake.address() as net.AddressInfo;
    let reconnects = 0;
    const warnings: string[] = [];
    const client = await NatsClient.connect([`nats://${HOST}:${port}`], {
      name: 'test',
      persistent: true,
      pingIntervalMs: 100,
      reconnected: () => reconnects++,
      warning: (m) => warnings.push(m),
    });
    try {
      await until('a reconnect', () => { expect(reconnects).toBeGreaterThanOrEqual(1); return true; });
      expect(connections).toBeGreaterThanOrEqual(2);
      expect(warnings).toContain(`NATS at ${HOST}:${port} stopped answering PINGs: reconnecting`);
    } finally {
      await client.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => fake.close(resolve));
    }
  });
});

describe('NatsClient reconnection', () => {
  test('after a restart of the server, clients come back spread over time (jitter), not in the same millisecond', async () => {
    const port = await freePort(HOST);
    let server = await startServer(port);
    const times: number[] = [];
    const clients = await Promise.all(
      Array.from({ length: 10 }, () => NatsClient.connect([`nats://${HOST}:${port}`], { name: 'test', persistent: true, warning: () => undefined, reconnected: () => times.push(performance.now()) })),
    );
    try {
      await stopServer(server);
      // Down for six failed attempts a client on average (counted where they land), so that the bound of the
      // waits has grown to a second or more: even an event loop held up for a while cannot bunch them all.
      let attempts = 0;
      const refuser = net.createServer((socket) => (attempts++, socket.destroy()));
      await new Promise<void>((resolve) => refuser.listen(port, HOST, resolve));
      await until('60 attempts', () => { expect(attempts).toBeGreaterThanOrEqual(60); return true; }, 30_000);
      await new Promise((resolve) => refuser.close(resolve));
      server = await startServer(port);
      await until('ten reconnects', () => { expect(times).toHaveLength(10); return true; }, 10_000);
      times.sort((a, b) => a - b);
      // Full jitter: ten waits drawn from 0 up to that bound; the same wait for all would bring them back together.
      expect(times[9] - times[0]).toBeGreaterThan(100);
    } finally {
      for (const client of clients) await client.close();
      await stopServer(server);
    }
  });
});
