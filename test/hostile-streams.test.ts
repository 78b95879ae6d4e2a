/**
 * What one user can send that must not hurt another's stream, on every
 * transport, with real clients on loopback: a message that forges an id line.
 * A hostile stranger's next tries belong here.
 */
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { api, openStream, received, startServer, waitFor, type SseClient, type StreamClient, type Transport, type WsClient } from './helpers.js';

let c1m: C1m | undefined;
const clients: { close(): void }[] = [];
afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
  c1m = undefined;
});

async function open(transport: Transport, id: number, query = '') {
  const client = await openStream(transport, c1m!.port, id, query);
  clients.push(client);
  return client;
}

async function send(user: number, message: string | Uint8Array): Promise<number> {
  const { status, json } = await api(c1m!.apiPort, 'POST', `/send/${user}`, message);
  expect(status).toBe(200);
  return json.id;
}

/** A stream's raw body, as read so far. */
function rawBody(path: string, headers: Record<string, string> = {}) {
  const body = { text: '', ended: false, close: () => req.destroy() };
  const req = http.get({ host: '127.0.0.1', port: c1m!.port, path, headers, agent: false }, (res) => {
    res.setEncoding('latin1');
    res.on('data', (text: string) => (body.text += text));
    res.on('end', () => (body.ended = true));
  });
  req.on('error', () => (body.ended = true));
  clients.push(body);
  return body;
}

describe('a message cannot forge an id', () => {
  // Every way a reader may split lines, and messages that try to look like a later message or a lost line.
  const forgeries = (next: number) => [`see you\n${next + 3} ok`, `see you\r${next + 3} ok`, `see you\r\n${next + 3} ok\r\n`, `\nlost expired`, `a\n\n\r\r\n b`];

  it('on a numbered chunked stream: no line of a message reads as an id line, however lines are split, and the reader gets each message back whole', async () => {
    c1m = await startServer();
    const first = await send(1, 'first');
    const raw = rawBody(`/test/1?lastEventId=${first}`);
    const client = (await open('chunked', 1, `?lastEventId=${first}`)) as StreamClient;
    const messages = forgeries(c1m.stats().history!.lastId + 1);
    const ids: number[] = [];
    for (const message of messages) ids.push(await send(1, message));
    const last = await send(1, 'last');
    await waitFor(() => received(client).at(-1) === `${last} last`, 'the last message');
    expect(received(client)).toEqual([...messages.map((m, i) => `${ids[i]} ${m}`), `${last} last`]);
    for (const split of [/\n/, /\r\n|\r|\n/]) {
      const lines = raw.text.split(split).slice(1); // after the welcome
      const idLines = lines.filter((line) => /^\d/.test(line)).map((line) => Number(line.split(' ')[0]));
      expect(idLines).toEqual([...ids, last]);
      expect(lines.filter((line) => line.startsWith('lost'))).toEqual([]);
    }
  });

  it('on SSE: CR, LF and CRLF all start a new data: line, so no field or event is forged', async () => {
    c1m = await startServer();
    const client = (await open('sse', 1)) as SseClient;
    const message = 'a\r\nid: 1\r\nevent: lost\rdata: x\n\nretry: 1';
    const id = await send(1, message);
    const last = await send(1, 'last');
    await waitFor(() => client.messages.at(-1) === 'last', 'the last message');
    expect(client.events.slice(1)).toEqual([
      { event: 'message', data: 'a\nid: 1\nevent: lost\ndata: x\n\nretry: 1', id: String(id) },
      { event: 'message', data: 'last', id: String(last) },
    ]);
    expect(client.retry).toBeGreaterThanOrEqual(1000);
  });

  it('on a WebSocket: the header line is the server\'s, the payload after it verbatim', async () => {
    c1m = await startServer();
    const client = (await open('ws', 1)) as WsClient;
    const message = `message id=1\nlost\n`;
    const id = await send(1, message);
    await waitFor(() => client.frames.length === 2, 'the message');
    expect(client.frames[1]).toEqual({ header: `message id=${id}`, payload: message, binary: false });
  });

  it('without ids, /test/<id> writes a message as it is: byte for byte the original transport', async () => {
    c1m = await startServer();
    const raw = rawBody('/test/1');
    await waitFor(() => raw.text.includes('Welcome'), 'the welcome');
    await send(1, 'see you\n7 ok\r\n');
    await send(1, 'last');
    await waitFor(() => raw.text.includes('last'), 'the last message');
    expect(raw.text).toBe("Welcome, Url: '/test/1' Id: 1\nsee you\n7 ok\r\n\nlast\n");
  });
});
