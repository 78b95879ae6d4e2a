/**
 * EventSource (/sse/<id>) and WebSocket (/ws/<id>) streams in the single
 * process, with real clients on loopback: what each transport frames; then
 * the same tests over all three (chunked /test/<id> too): they share the
 * router, the limits, tokens and counters.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { mintStreamToken } from '../server/auth.js';
import { api, openStream, SseClient, stalledStream, startServer, WsClient, type StreamClient, type Transport } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m;
const clients: { close(): void }[] = [];
const open = async (transport: Transport, id: number, query = '') => {
  const client = await openStream(transport, c1m.port, id, query);
  clients.push(client);
  return client;
};

afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
});

describe('GET /sse/<id>', () => {
  it('answers text/event-stream with a retry hint and a welcome event', async () => {
    c1m = await startServer();
    const client = (await open('sse', 12)) as SseClient;
    expect(client.status).toBe(200);
    expect(client.headers['content-type']).toBe('text/event-stream; charset=utf-8');
    expect(client.headers['cache-control']).toBe('no-cache');
    expect(client.headers['x-accel-buffering']).toBe('no');
    expect(client.events).toEqual([{ event: 'welcome', data: "Welcome, Url: '/sse/12' Id: 12" }]);
    expect(client.retry).toBeGreaterThanOrEqual(1000);
    expect(client.retry).toBeLessThan(5000);
  });

  it('sends each line of a message as its own data: line, so a payload cannot forge an event or a field', async () => {
    c1m = await startServer();
    const client = (await open('sse', 1)) as SseClient;
    const forged = 'first\n\nevent: welcome\r\nid: 99\rretry: 1\n\ndata: x';
    c1m.router.send(1, forged);
    c1m.router.send(1, 'plain');
    await until('two events', () => client.messages.length === 2);
    // The id field is the server's own (the message's id in the history), never one a payload forged.
    const id = c1m.stats().history!.lastId;
    expect(client.events.slice(1)).toEqual([
      { event: 'message', data: 'first\n\nevent: welcome\nid: 99\nretry: 1\n\ndata: x', id: String(id - 1) },
      { event: 'message', data: 'plain', id: String(id) },
    ]);
    expect(client.retry).toBeGreaterThanOrEqual(1000);
  });

  it('writes its heartbeat as a comment line', async () => {
    c1m = await startServer({ heartbeatSeconds: 0.05 });
    const client = (await open('sse', 1)) as SseClient;
    await until('two heartbeat comments', () => client.comments >= 2);
    expect(client.events.length).toBe(1);
  });
});

describe('/ws/<id>', () => {
  it('upgrades, then sends a welcome frame and one text frame per message, line breaks and all', async () => {
    c1m = await startServer();
    const client = (await open('ws', 5)) as WsClient;
    expect(client.status).toBe(101);
    expect(client.frames).toEqual([{ header: 'welcome', payload: "Welcome, Url: '/ws/5' Id: 5", binary: false }]);
    c1m.router.send(5, 'two\nlines');
    c1m.router.send(5, new Uint8Array([0xff, 0x0a, 0x00])); // not UTF-8: a binary frame
    await until('two frames', () => client.messages.length === 2);
    // With a history (the default) each message's header carries its id.
    const id = c1m.stats().history!.lastId;
    expect(client.frames.slice(1).map((f) => [f.header, f.payload, f.binary])).toEqual([
      [`message id=${id - 1}`, 'two\nlines', false],
      [`message id=${id}`, Buffer.from([0xff, 0x0a, 0x00]).toString(), true],
    ]);
  });

  it('refuses a frame from the client with close code 1003, and a plain GET with 426', async () => {
    c1m = await startServer();
    const client = (await open('ws', 5)) as WsClient;
    client.send(0x1, Buffer.from('hello?'));
    await until('the server to close', () => client.ended);
    expect(client.closeCode).toBe(1003);
    expect(c1m.stats().connections).toBe(0);
    const res = await fetch(`http://127.0.0.1:${c1m.port}/ws/5`);
    expect(res.status).toBe(426);
  });

  it('takes its token from Sec-WebSocket-Protocol and answers with the c1m protocol', async () => {
    const secret = 'ws secret, at least 32 bytes long';
    c1m = await startServer({ streamSecret: secret });
    const client = new WsClient(c1m.port, '/ws/8', `c1m, token.${mintStreamToken(secret, 8, 60)}`);
    clients.push(client);
    await until('welcome', () => client.frames.length > 0);
    expect(client.headers).toMatch(/sec-websocket-protocol: c1m/i);
    const wrong = new WsClient(c1m.port, '/ws/9', `c1m, token.${mintStreamToken(secret, 8, 60)}`);
    clients.push(wrong);
    await until('refusal', () => wrong.status !== 0);
    expect(wrong.status).toBe(403);
  });

  it('pings through uWS when heartbeats are on, and the client\'s pongs keep it open', async () => {
    c1m = await startServer({ heartbeatSeconds: 1 }); // uWS: idle timeout 8 s, a ping after 4 s of silence
    const client = (await open('ws', 3)) as WsClient;
    await until('a ping', () => client.pings >= 1, 10_000);
    expect(client.ended).toBe(false);
  });
});

describe('heartbeats', () => {
  it('--heartbeat 1 writes one heartbeat per second to each chunked and SSE stream, however few streams there are', async () => {
    c1m = await startServer({ heartbeatSeconds: 1 });
    const chunked = (await open('chunked', 1)) as StreamClient;
    const sse = (await open('sse', 2)) as SseClient;
    // A condition to wait for, not a sleep: a sentinel sent after 3.5 s on each stream.
    const start = performance.now();
    await until('3.5 s', () => performance.now() - start > 3500, 10_000);
    await api(c1m.apiPort, 'POST', '/send/1', 'end');
    await api(c1m.apiPort, 'POST', '/send/2', 'end');
    await until('the sentinels', () => chunked.messages.includes('end') && sse.messages.includes('end'));
    const beats = [chunked.messages.filter((m) => m === '').length, sse.comments];
    // One a second: 3 or so in 3.5 s (a round every 100 ms, as before the fix, made 17 or more).
    for (const n of beats) expect(n).toBeGreaterThanOrEqual(2), expect(n).toBeLessThanOrEqual(5);
  });

  it('--heartbeat 5 pings a WebSocket at least every 5 s', async () => {
    c1m = await startServer({ heartbeatSeconds: 5 });
    const client = (await open('ws', 3)) as WsClient;
    const times = [performance.now()];
    let pings = 0;
    await until('three pings', () => {
        if (client.pings > pings) (pings = client.pings), times.push(performance.now());
        return pings >= 3;
      }, 20_000);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(5000);
    expect(client.ended).toBe(false);
  });
});

describe.each(['chunked', 'sse', 'ws'] as const)('%s streams share the router, limits and counters', (transport) => {
  /** The transport of a stream opened beside this one's. */
  const other: Transport = transport === 'chunked' ? 'sse' : 'chunked';

  it('delivers to the sender and its subscribers only, and counts per transport', async () => {
    c1m = await startServer();
    c1m.store.addSubscriptions([[2, 1], [3, 1], [1, 4]]); // 2 and 3 hear 1; 1 hears 4, not the other way round
    const [u1, u2, u3, u4] = await Promise.all([1, 2, 3, 4].map((id) => open(transport, id)));
    const beside = await open(other, 2);
    expect(c1m.router.send(1, 'from 1')).toBe(4);
    expect(c1m.router.send(99, 'nobody home')).toBe(0);
    // A sentinel sent after arrives after anything sent before it: once it is there, nothing else is on its way.
    expect(c1m.router.send(4, 'sentinel')).toBe(2);
    await until('sentinel', () => u4.messages.includes('sentinel') && u1.messages.includes('sentinel'));
    await until('deliveries', () => [u1, u2, u3, beside].every((c) => c.messages.includes('from 1')));
    expect([u1, u2, u3, u4].map((c) => c.messages)).toEqual([['from 1', 'sentinel'], ['from 1'], ['from 1'], ['sentinel']]);
    const stats = c1m.stats();
    expect(stats.transports[transport]).toMatchObject({ open: 4, chunks: 5, slowConsumerCloses: 0 });
    expect(stats.transports[other]).toMatchObject({ open: 1, chunks: 1 });
    expect(stats).toMatchObject({ connections: 5, chunks: 6 });
    const metrics = (await api(c1m.apiPort, 'GET', '/metrics')).text;
    expect(metrics).toContain(`c1m_transport_streams{transport="${transport}"} 4`);
    expect(metrics).toContain(`c1m_transport_chunks_total{transport="${transport}"} 5`);
  });

  it('carries a message at --max-message through the API whole', async () => {
    c1m = await startServer({ maxMessage: 100_000, maxBacklog: 1024 * 1024 });
    const client = await open(transport, 1);
    const message = 'x'.repeat(100_000);
    expect((await api(c1m.apiPort, 'POST', '/send/1', message)).json).toMatchObject({ delivered: 1 });
    expect((await api(c1m.apiPort, 'POST', '/send/1', message + 'y')).status).toBe(413);
    await until('the large message', () => client.messages.length === 1);
    expect(client.messages[0]).toBe(message);
  });

  it('closes a client that stops reading as a slow consumer, counted; others keep receiving', async () => {
    c1m = await startServer({ maxBacklog: 1024 * 1024 });
    c1m.store.addSubscriptions([[2, 1]]);
    const reader = await open(transport, 2);
    const socket = await stalledStream(c1m, transport, 1);
    const message = 'x'.repeat(16 * 1024);
    let sent = 0;
    // Kernel socket buffers absorb a few MB first; bounded at 100 MB in total.
    while (c1m.stats().slowConsumerCloses === 0 && sent < 6400) {
      for (let i = 0; i < 16; i++, sent++) c1m.router.send(1, message);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(c1m.stats().transports[transport].slowConsumerCloses).toBe(1);
    await until('stalled client logged out', () => c1m.stats().connections === 1);
    expect(c1m.router.send(1, 'still here')).toBe(1);
    await until('reader keeps receiving', () => reader.messages.at(-1) === 'still here', 20_000);
    expect(reader.messages.length).toBe(sent + 1);
    expect(reader.messages.slice(0, -1).every((m) => m === message)).toBe(true);
    socket.destroy();
  });

  it('needs a token for its own id, unexpired, with --stream-secret', async () => {
    const secret = 'transport secret, at least 32 bytes';
    c1m = await startServer({ streamSecret: secret });
    const missing = await open(transport, 4);
    const wrongUser = await open(transport, 4, `?token=${mintStreamToken(secret, 5, 60)}`);
    const expired = await open(transport, 4, `?token=${mintStreamToken(secret, 4, 60, Date.now() - 120_000)}`);
    const good = await open(transport, 4, `?token=${mintStreamToken(secret, 4, 60)}`);
    expect([missing, wrongUser, expired, good].map((c) => c.status)).toEqual([401, 403, 403, transport === 'ws' ? 101 : 200]);
    expect(wrongUser.body).toContain('token is for user 5');
    expect(expired.body).toContain('token expired');
    expect(c1m.stats().transports[transport].authFailures).toBe(3);
    expect(c1m.router.send(4, 'signed')).toBe(1);
    await until('delivery', () => good.messages.includes('signed'));
  });

  it('holds the per-user cap and --max-connections across transports', async () => {
    c1m = await startServer({ maxStreamsPerUser: 2, maxConnections: 3 });
    await open('chunked', 6);
    await open(transport, 6);
    const third = await open(transport, 6);
    expect(third.status).toBe(429);
    await open(transport, 7);
    const full = await open(transport, 8);
    expect(full.status).toBe(503);
    expect(c1m.stats().connections).toBe(3);
  });

  it('closes its streams cleanly when the server closes', async () => {
    c1m = await startServer();
    const client = await open(transport, 3);
    c1m.close();
    await until('stream end', () => client.ended);
    if (client instanceof WsClient) expect(client.closeCode).toBe(1001);
    expect(c1m.stats().connections).toBe(0);
  });
});
