/**
 * Message ids and resume in one process, on every transport: a client that
 * comes back with the last id it saw gets what it missed, once each and in
 * order, then the live messages; one that comes back too late, or with an id
 * this store never gave, is told so first; and a server killed with kill -9
 * and restarted on the same store still has what it had accepted.
 */
import http from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m, SqliteStore } from '../index.js';
import { Registry } from '../router/registry.js';
import { toChunk, type Chunk } from '../router/router.js';
import { resume } from '../server/resume.js';
import { numberedMessages } from '../server/stream.js';
import { api, openStream, received, runCli, spawnServer, startServer, stopChild, tempDir, type SseClient, type StreamClient, type Transport, type WsClient } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m | undefined;
const clients: (StreamClient | SseClient | WsClient)[] = [];
afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
  c1m = undefined;
});


async function open(transport: Transport, port: number, id: number, query = '') {
  const client = await openStream(transport, port, id, query);
  clients.push(client);
  return client;
}

/** A promise and what resolves it (Node 20 has no Promise.withResolvers). */
function gate() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** The id an API send got, and its text, as a resumed client shows it. */
async function send(apiPort: number, user: number, text: string): Promise<string> {
  const { json } = await api(apiPort, 'POST', `/send/${user}`, text);
  expect(json.id).toEqual(expect.any(Number));
  return `${json.id} ${text}`;
}

for (const transport of ['chunked', 'sse', 'ws'] as const) {
  // Chunked streams show ids only when asked (?ids=1 or ?lastEventId=): without, they are the original's bytes.
  const ids = transport === 'chunked' ? '?ids=1' : '';
  describe(`resume over ${transport}`, () => {
    it('after a close, replays what was missed once each, in order, then the live messages', async () => {
      c1m = await startServer();
      c1m.store.addSubscriptions([[1, 2]]); // 1 hears 2
      const first = await open(transport, c1m.port, 1, ids);
      const seen = await send(c1m.apiPort, 2, 'seen');
      await until('the first message', () => received(first).length === 1);
      expect(received(first)).toEqual([seen]);
      first.close();
      await until('the close', () => !c1m!.registry.isConnected(1));
      const missed = [await send(c1m.apiPort, 1, 'missed one'), await send(c1m.apiPort, 3, 'not for 1'), await send(c1m.apiPort, 2, 'missed\ntwo')];
      const resumed = await open(transport, c1m.port, 1, `?lastEventId=${seen.split(' ')[0]}`);
      const live = await send(c1m.apiPort, 2, 'live');
      await until('the replay and the live message', () => received(resumed).length === 3);
      expect(received(resumed)).toEqual([missed[0], missed[2], live]);
      expect(c1m.stats().history).toMatchObject({ resumes: 1, replayed: 2, lost: 0 });
    });

    it('hands over with the held live messages overlapping the replay: each once, in order', async () => {
      c1m = await startServer();
      const server = c1m;
      const from = Number((await send(server.apiPort, 1, 'start')).split(' ')[0]);
      // The replay is read after 'one' reached the holder live, and answered after 'two' did: 'one' is in both.
      const replay = server.hub.replay!;
      const gates = [gate(), gate()];
      let asked = false;
      let read = false;
      server.hub.replay = async (user, after, budget, topics) => {
        asked = true;
        await gates[0].promise;
        const answer = replay(user, after, budget, topics);
        read = true;
        await gates[1].promise;
        return answer;
      };
      const client = await open(transport, server.port, 1, `?lastEventId=${from}`);
      await until('the replay asked for', () => asked);
      const one = await send(server.apiPort, 1, 'one');
      gates[0].resolve();
      await until('the replay read', () => read);
      const two = await send(server.apiPort, 1, 'two');
      gates[1].resolve();
      const three = await send(server.apiPort, 1, 'three');
      await until('the live message after the hand-over', () => received(client).includes(three));
      expect(received(client)).toEqual([one, two, three]);
    });

    it('tells a client with an id this store never gave, or one from before its history, that its history is lost; then live', async () => {
      c1m = await startServer();
      const unknown = await open(transport, c1m.port, 4, '?lastEventId=99999999999999999');
      const notAnId = await open(transport, c1m.port, 4, '?lastEventId=abc');
      const tooOld = await open(transport, c1m.port, 4, '?lastEventId=12');
      const live = await send(c1m.apiPort, 4, 'live');
      for (const [client, why] of [[unknown, 'unknown'], [notAnId, 'unknown'], [tooOld, 'expired']] as const) {
        await until('lost, then live', () => received(client).length === 2);
        expect(received(client)).toEqual([`lost ${why}`, live]);
      }
      expect(c1m.stats().history).toMatchObject({ resumes: 3, lost: 3 });
    });
  });
}

it('resumes /test/<id> and /sse/<id> from the Last-Event-ID header, as an EventSource sends it', async () => {
  c1m = await startServer();
  const seen = await send(c1m.apiPort, 1, 'seen');
  const missed = await send(c1m.apiPort, 1, 'missed\nby both');
  for (const path of ['/test/1', '/sse/1']) {
    let body = '';
    const req = http.get({ host: '127.0.0.1', port: c1m.port, path, headers: { 'Last-Event-ID': seen.split(' ')[0] }, agent: false }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (text: string) => (body += text));
    });
    clients.push({ close: () => req.destroy() } as StreamClient);
    const id = missed.split(' ')[0];
    const expected = path === '/sse/1' ? `id: ${id}\ndata: missed\ndata: by both\n\n` : `${id} missed\n by both\n`;
    await until(`the replay on ${path}`, () => body.endsWith(expected));
    expect(path === '/sse/1' ? body : numberedMessages(body.split('\n').slice(1, -1))).toEqual(path === '/sse/1' ? expect.stringContaining(expected) : [missed]);
  }
});

it('tells a client away longer than the history that it is lost', async () => {
  c1m = await startServer({ historySeconds: 1 });
  const seen = (await send(c1m.apiPort, 1, 'seen')).split(' ')[0];
  await send(c1m.apiPort, 1, 'missed, and older than the window by the time the client is back');
  const rows = () => (c1m!.store as SqliteStore).db.prepare('SELECT count(*) FROM history').pluck().get();
  await until('pruning (every second) to take both', () => rows() === 0, 5000);
  const client = await open('sse', c1m.port, 1, `?lastEventId=${seen}`);
  await until('lost', () => received(client).length === 1);
  expect(received(client)).toEqual(['lost expired']);
});

it('hands over from replay to live with nothing lost or doubled while sends keep coming', async () => {
  c1m = await startServer();
  const server = c1m;
  let n = 0;
  const first = Number((await send(server.apiPort, 1, 'start')).split(' ')[0]);
  // Sends on every event-loop turn while the stream opens, so some land in the replay and some live.
  let sending = true;
  const pump = () => {
    if (!sending) return;
    server.router.send(1, `m${++n}`);
    setImmediate(pump);
  };
  pump();
  const client = await open('sse', server.port, 1, `?lastEventId=${first}`);
  await until('sends after the stream opened', () => n > 200);
  sending = false;
  await until(`all ${n} messages`, () => received(client).length === n);
  const got = received(client).map((line) => line.split(' ')[1]);
  expect(got).toEqual(Array.from({ length: n }, (_, i) => `m${i + 1}`));
  const gotIds = received(client).map((line) => Number(line.split(' ')[0]));
  expect(gotIds).toEqual([...gotIds].sort((a, b) => a - b));
  expect(new Set(gotIds).size).toBe(n);
});

it('a replay larger than the stream may hold comes in parts: the stream ends after each, and resuming from its last id gives the rest', async () => {
  c1m = await startServer({ maxBacklog: 64 * 1024, maxMessage: 8 * 1024 });
  const from = Number((await send(c1m.apiPort, 1, 'start')).split(' ')[0]);
  for (let i = 0; i < 20; i++) c1m.router.send(1, `${i} `.padEnd(8 * 1024, '.'));
  const got: string[] = [];
  let [after, parts] = [from, 0];
  while (got.length < 20 && parts < 20) {
    const client = (await open('chunked', c1m.port, 1, `?lastEventId=${after}`)) as StreamClient;
    // A part that did not hold everything ends its stream; the last part stays open, live.
    await until('a part', () => client.ended || got.length + received(client).length === 20);
    const part = received(client);
    got.push(...part.map((line) => line.split(' ')[1]));
    after = Number(part.at(-1)!.split(' ')[0]);
    parts++;
  }
  expect(got).toEqual(Array.from({ length: 20 }, (_, i) => `${i}`));
  expect(parts).toBeGreaterThan(2);
  expect(c1m.stats().slowConsumerCloses).toBe(0);
});

it('a server killed with kill -9 and restarted on the same store replays what it accepted before it died', async () => {
  const db = join(tempDir(), 'c1m.db');
  const first = await spawnServer(['--db', db]);
  const seen = await send(first.apiPort, 1, 'seen');
  const missed = [await send(first.apiPort, 1, 'accepted, then the server died'), await send(first.apiPort, 1, 'this one too')];
  first.child.kill('SIGKILL');
  await new Promise((resolve) => first.child.once('exit', resolve));
  const second = await spawnServer(['--db', db]);
  try {
    for (const transport of ['chunked', 'sse', 'ws'] as const) {
      const client = await open(transport, second.port, 1, `?lastEventId=${seen.split(' ')[0]}`);
      const live = await send(second.apiPort, 2, `live over ${transport}`); // 2 is nobody's: a sentinel that 1 must not get
      const own = await send(second.apiPort, 1, `live for 1 over ${transport}`);
      await until('the live message', () => received(client).includes(own));
      expect(received(client).slice(0, 2)).toEqual(missed);
      expect(received(client)).not.toContain(live);
      expect(Number(own.split(' ')[0])).toBeGreaterThan(Number(missed[1].split(' ')[0]));
    }
  } finally {
    await stopChild(second.child);
  }
});

it('a second server on a store whose history another live server keeps refuses to start, naming it', async () => {
  const db = join(tempDir(), 'c1m.db');
  const first = await spawnServer(['--db', db]);
  try {
    const second = await runCli(['server', '--db', db, '--port', '0', '--api-port', '0']);
    expect(second.code).not.toBe(0);
    expect(second.stderr + second.stdout).toMatch(new RegExp(`another process \\([^:]+:${first.child.pid}:[0-9a-f]+, term \\d+\\) numbers this store's messages`));
    expect((await send(first.apiPort, 1, 'still served')).endsWith('still served')).toBe(true);
  } finally {
    await stopChild(first.child);
  }
});

describe('a new stream where a cluster has several partitions', () => {
  it("starts from each partition's head, moved back before the first message its holder kept of that partition", async () => {
    const registry = new Registry();
    const answer = gate();
    const heads = [10, 10];
    const hub = {
      registry,
      maxBacklog: 1 << 20,
      partitions: 2,
      schedule: () => {},
      // The edge's answer for a new stream (cluster/replayer.ts): each partition's head, read after live messages reached the holder.
      replay: async () => (await answer.promise, { lost: false as const, messages: [], start: heads, headed: [true, true] }),
    };
    const written: string[] = [];
    const started: number[][] = [];
    const stream = {
      user: 7,
      ended: false,
      numbered: true,
      lost: () => {},
      framedSize: (chunk: Buffer) => chunk.length,
      startAt: (start: number[]) => started.push(start),
      write: (chunk: Chunk) => (written.push(`${chunk.partition}:${chunk.id}`), 1),
      close: () => {},
    };
    resume(hub, stream, undefined);
    // Live while the heads are asked for: partition 1's 8 and 9, numbered once the login was in, below the head read after.
    for (const id of [8, 9]) registry.deliver(7, Object.assign(toChunk('live', id), { partition: 1 }));
    answer.resolve();
    await until('the hand-over', () => started.length > 0);
    expect(started).toEqual([[10, 7]]);
    expect(written).toEqual(['1:8', '1:9']);
    expect(registry.connectionsOf(7)).toBe(1);
  });
});
