/**
 * What one user can send that must not hurt another's stream, on every
 * transport, with real clients on loopback: a message that forges an id line,
 * a message whose framing outgrows the backlog, a replay larger than its
 * budget. A hostile stranger's next tries belong here.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { EventSource } from 'eventsource';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore, type C1m } from '../index.js';
import { api, openStream, received, startServer, tempDir, type SseClient, type StreamClient, type Transport, type WsClient } from './helpers.js';
import { until } from '../bench/until.js';

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
    await until('the last message', () => received(client).at(-1) === `${last} last`);
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
    await until('the last message', () => client.messages.at(-1) === 'last');
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
    await until('the message', () => client.frames.length === 2);
    expect(client.frames[1]).toEqual({ header: `message id=${id}`, payload: message, binary: false });
  });

  it('without ids, /test/<id> writes a message as it is: byte for byte the original transport', async () => {
    c1m = await startServer();
    const raw = rawBody('/test/1');
    await until('the welcome', () => raw.text.includes('Welcome'));
    await send(1, 'see you\n7 ok\r\n');
    await send(1, 'last');
    await until('the last message', () => raw.text.includes('last'));
    expect(raw.text).toBe("Welcome, Url: '/test/1' Id: 1\nsee you\n7 ok\r\n\nlast\n");
  });
});

describe('a message that is accepted reaches every transport, live and replayed', () => {
  /** 64 KiB of line breaks: framed for SSE (a `data: ` per line) it is about 450 KB, past the default 256 KiB backlog. */
  const manyLines = '\n'.repeat(64 * 1024 - 1) + 'x';

  for (const transport of ['chunked', 'sse', 'ws'] as const) {
    const ids = transport === 'chunked' ? '?ids=1' : '';
    it(`${transport}: a message whose framing is larger than the backlog is delivered live, and the next one after it`, async () => {
      c1m = await startServer();
      const client = await open(transport, 1, ids);
      const id = await send(1, manyLines);
      await until('the large message', () => received(client).length === 1, 20_000);
      await send(1, 'next');
      await until('the next message', () => received(client).length === 2, 20_000);
      expect(received(client)).toEqual([`${id} ${manyLines}`, expect.stringMatching(/ next$/)]);
      expect(c1m.stats().slowConsumerCloses).toBe(0);
    });

    it(`${transport}: a message of --max-message equal to --max-backlog, larger than that as framed, is delivered`, async () => {
      c1m = await startServer({ maxBacklog: 65_536, maxMessage: 65_536 });
      const client = await open(transport, 1, ids);
      const message = 'm'.repeat(65_536);
      const id = await send(1, message);
      await until('the message', () => received(client).length === 1);
      expect(received(client)).toEqual([`${id} ${message}`]);
      expect(c1m.stats().slowConsumerCloses).toBe(0);
    });

    it(`${transport}: a message larger than the replay budget is replayed alone, and the resume after it goes on live`, async () => {
      c1m = await startServer({ maxBacklog: 65_536, maxMessage: 65_536 });
      const from = await send(1, 'start');
      const big = 'b'.repeat(40_000);
      const id = await send(1, big);
      const client = await open(transport, 1, `?lastEventId=${from}`);
      await until('the large message replayed', () => received(client).length === 1, 20_000);
      expect(received(client)).toEqual([`${id} ${big}`]);
      // It went alone, past the budget: the stream ends, and its client comes back from that id.
      await until('the part to end', () => client.ended);
      const back = await open(transport, 1, `?lastEventId=${id}`);
      const next = await send(1, 'next');
      await until('the next message, live', () => received(back).length === 1);
      expect(received(back)).toEqual([`${next} next`]);
      expect(back.ended).toBe(false);
    });
  }

  it('sse: a reader that pauses while a message framed past the backlog goes out gets it whole when it reads again; the stream stays', async () => {
    // 1 MiB of line breaks frame to about 7 MB: more than the kernel's buffers take from a reader that does not read.
    c1m = await startServer({ maxBacklog: 1024 * 1024, maxMessage: 1024 * 1024, maxBody: 2 * 1024 * 1024 });
    const body = { bytes: 0, tail: '', welcome: 0 };
    let response: http.IncomingMessage | undefined;
    const req = http.get({ host: '127.0.0.1', port: c1m.port, path: '/sse/1', agent: false }, (res) => {
      response = res;
      res.setEncoding('latin1');
      res.on('data', (chunk: string) => {
        body.bytes += chunk.length;
        body.tail = (body.tail + chunk).slice(-32);
        if (body.welcome === 0) body.welcome = body.bytes;
      });
    });
    clients.push({ close: () => req.destroy() });
    await until('the welcome', () => body.welcome > 0);
    response!.pause(); // the kernel's buffers fill, and uWS holds the rest
    await send(1, '\n'.repeat(1024 * 1024 - 1) + 'x');
    await until('the message handed to uWS', () => c1m!.stats().transports.sse.chunks === 1);
    response!.resume();
    await until('the whole message', () => body.tail.endsWith('data: x\n\n'), 20_000);
    expect(body.bytes).toBe(body.welcome + c1m.stats().transports.sse.bytes);
    await send(1, 'next');
    await until('the next message', () => body.tail.endsWith('data: next\n\n'), 20_000);
    expect(c1m.stats().slowConsumerCloses).toBe(0);
  });

  it('npm eventsource: a message that frames past the backlog does not drive its client into a reconnect loop', async () => {
    c1m = await startServer();
    let opens = 0;
    const got: string[] = [];
    const source = new EventSource(`http://127.0.0.1:${c1m.port}/sse/1`, {
      fetch: (url, init) => {
        opens++;
        return fetch(url, init);
      },
    });
    clients.push(source);
    source.onmessage = (e) => got.push(e.data);
    await until('the stream', () => c1m!.stats().connections === 1);
    await send(1, manyLines);
    await send(1, 'next');
    await until('both messages', () => got.length === 2, 20_000);
    expect(got).toEqual([manyLines, 'next']);
    expect(opens).toBe(1);
  });

  it('npm eventsource: a resume whose first message is larger than the replay budget makes progress, then goes on live', async () => {
    c1m = await startServer({ maxBacklog: 65_536, maxMessage: 65_536 });
    const from = await send(1, 'start');
    await send(1, 'b'.repeat(40_000));
    let opens = 0;
    const got: string[] = [];
    // Opened with ?lastEventId= as a page that kept its id would; on reconnect it sends the newer id as Last-Event-ID.
    const source = new EventSource(`http://127.0.0.1:${c1m.port}/sse/1?lastEventId=${from}`, {
      fetch: (url, init) => {
        opens++;
        return fetch(url, init);
      },
    });
    clients.push(source);
    source.onmessage = (e) => got.push(e.data);
    await until('the large message', () => got.length === 1, 20_000);
    // The part ended; EventSource comes back by itself (retry: 1-5 s) and stays.
    await until('the reconnect', () => opens === 2 && c1m!.stats().connections === 1, 20_000);
    await send(1, 'next');
    await until('the next message', () => got.length === 2, 20_000);
    expect(got).toEqual(['b'.repeat(40_000), 'next']);
    expect(opens).toBe(2);
  });
});

it('a replay reads only what its budget takes: 1,000 kept messages of 30 KB, a resume from the oldest', () => {
  const store = openStore(join(tempDir(), 'c1m.db'));
  const history = store.history({ seconds: 3600, perSubject: 10_000 });
  try {
    history.claimLease();
    store.addSubscriptions([[1, 2]]);
    const body = Buffer.alloc(30_000, 'x');
    const first = history.append(2, body);
    for (let i = 1; i < 1000; i++) history.append(2, body);
    history.flush();
    const read = () => Number(/rchar: (\d+)/.exec(readFileSync('/proc/thread-self/io', 'utf8'))![1]);
    history.replay(1, history.lastId - 1, 128 * 1024); // warms what every replay reads (the schema)
    const before = read();
    const replay = history.replay(1, first - 1, 128 * 1024);
    const bytesRead = read() - before;
    expect(replay).toMatchObject({ lost: false, more: true });
    if (replay.lost) return;
    expect(replay.messages.map((m) => m.id)).toEqual([first, first + 1, first + 2, first + 3]);
    // Four bodies and the rows' first pages: not the 30 MB of every body kept after the id (SQLite's page cache holds 2 MB).
    expect(bytesRead).toBeLessThan(3_000_000);
    expect(history.replay(1, first - 1).messages).toHaveLength(1000);
  } finally {
    history.close();
    store.close();
  }
});
