/**
 * Subjects `kind:id` beside users (issue 27): the rules of kinds and ids, and
 * lasting subscriptions to topics made by the backend, on a real server: the
 * HTTP API, the backend client, embedding, the CLI, every transport, resume.
 * A user stays a plain integer: `5` ≡ `user:5`, on the wire byte for byte.
 */
import { pack } from 'msgpackr';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { C1mClient, mintStreamToken, openStore, parseSubject, Registry, toSubject, type C1m } from '../index.js';
import { NO_TOPICS } from '../router/registry.js';
import { api, openStream, RawClient, received, runCli, spawnServer, startServer, stopChild, tempDir, type SseClient, type StreamClient, type WsClient } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m | undefined;
const clients: (StreamClient | SseClient | WsClient | RawClient)[] = [];
afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
  c1m = undefined;
});

describe('subjects', () => {
  it('are a user id or kind:id; user:5 is user 5; anything else is refused saying what a subject is', () => {
    expect(parseSubject('5')).toBe(5);
    expect(parseSubject('user:5')).toBe(5);
    expect(toSubject(5)).toBe(5);
    expect(toSubject('user:5')).toBe(5);
    for (const topic of ['photo:789', 'group:42', 'live-match_2:a.B~c-9', `k${'a'.repeat(31)}:${'x'.repeat(64)}`]) {
      expect(toSubject(topic)).toBe(topic);
      expect(parseSubject(topic)).toBe(topic);
    }
    const refused: [unknown, RegExp][] = [
      ['Photo:1', /not a subject: "Photo:1" \(expected a user id, user:<id>, or kind:id/],
      ['9photo:1', /not a subject/],
      ['photo:', /not a subject/],
      [':789', /not a subject/],
      ['photo:7/8', /not a subject/],
      ['photo:7,8', /not a subject/],
      ['photo:é', /not a subject/],
      [`k${'a'.repeat(32)}:1`, /not a subject/],
      [`photo:${'x'.repeat(65)}`, /not a subject/],
      ['user:abc', /not a user id: "abc"/],
      ['user:0', /not a user id: "0"/],
      ['user:2000', /user id 2000 is above the limit of 1000/],
      [0, /not a user id: 0/],
      [1.5, /not a user id: 1.5/],
      [null, /not a subject: null/],
      [['photo:1'], /not a subject/],
      // In a value (JSON, msgpack, the bus) a user is a number; a string of digits is a mistake, not a guess.
      ['2', /not a user id: "2" \(a user id is a number; as text, user:2\)/],
    ];
    for (const [value, why] of refused) expect(() => toSubject(value, 1000), String(value)).toThrow(why);
    expect(() => parseSubject('007')).toThrow(/not a user id: "007"/);
    expect(() => parseSubject('2000', 1000)).toThrow(/above the limit of 1000/);
  });
});

describe('the store', () => {
  it('keeps topics as text beside users as integers in the same tables, apart, through their primary keys, across a reopen', () => {
    const path = join(tempDir(), 'c1m.db');
    let store = openStore(path);
    store.addSubscriptions([[1, 789], [2, 'photo:789'], [3, 'photo:789'], [3, 'photo:78'], [1, 'user:2']]);
    store.close();
    store = openStore(path);
    try {
      expect(store.getSubscribers(789)).toEqual([1]);
      expect(store.getSubscribers('photo:789')).toEqual([2, 3]);
      expect(store.getSubscribers(2)).toEqual([1]);
      expect(store.getSubscriptions(3)).toEqual(['photo:78', 'photo:789']);
      expect(store.getSubscriptions(1)).toEqual([2, 789]);
      expect(store.db.prepare('SELECT typeof(subscribee) AS type, count(*) AS n FROM subscriptions GROUP BY 1 ORDER BY 1').all()).toEqual([
        { type: 'integer', n: 2 },
        { type: 'text', n: 3 },
      ]);
      for (const statement of [store.subscribers, store.subscriptions]) {
        const plan = store.db.prepare(`EXPLAIN QUERY PLAN ${statement.source}`).all('photo:789') as { detail: string }[];
        expect(plan.map((row) => row.detail).join('\n')).toMatch(/^SEARCH \w+ USING PRIMARY KEY \(\w+=\?\)$/);
      }
    } finally {
      store.close();
    }
  });
});

describe('lasting subscriptions to topics', () => {
  it('the API stores [user, topic] pairs (JSON and msgpack), lists them both ways, and sends reach the subscribers only', async () => {
    c1m = await startServer();
    const port = c1m.apiPort;
    expect((await api(port, 'POST', '/subscriptions', JSON.stringify([[1, 'photo:789'], [2, 'photo:789'], [2, 'user:1'], [3, 'group:42']]))).json).toEqual({ added: 4 });
    expect((await api(port, 'POST', '/subscriptions', pack([[3, 'photo:789'], [1, 'photo:789']]), { 'content-type': 'application/msgpack' })).json).toEqual({ added: 1 });
    expect((await api(port, 'GET', '/subscribers/photo:789')).json).toEqual([1, 2, 3]);
    expect((await api(port, 'GET', '/subscribers/photo%3A789')).json).toEqual([1, 2, 3]);
    expect((await api(port, 'GET', '/subscribers/user:1')).json).toEqual([2]);
    expect((await api(port, 'GET', '/subscriptions/2')).json).toEqual([1, 'photo:789']);
    expect((await api(port, 'GET', '/subscriptions/user:3')).json).toEqual(['group:42', 'photo:789']);

    const streams = await Promise.all([1, 2, 3, 4].map((user) => openStream('chunked', c1m!.port, user)));
    clients.push(...streams);
    const comment = await api(port, 'POST', '/send/photo:789', 'a comment');
    expect(comment.json).toEqual({ delivered: 3, id: expect.any(Number) });
    expect((await api(port, 'POST', '/send/group:42', 'to the group')).json).toMatchObject({ delivered: 1 });
    expect((await api(port, 'POST', '/send/match:7', 'nobody')).json).toMatchObject({ delivered: 0 });
    // A message to user:1 reaches 1 itself and its subscribers, as /send/1 does.
    expect((await api(port, 'POST', '/send/user:1', 'to one')).json).toMatchObject({ delivered: 2 });
    await until('the messages', () => received(streams[2]).length === 2 && received(streams[1]).length === 2);
    expect(streams.map((s) => received(s))).toEqual([['a comment', 'to one'], ['a comment', 'to one'], ['a comment', 'to the group'], []]);

    expect(c1m.stats().kinds).toEqual({ user: { sends: 1, deliveries: 2 }, photo: { sends: 1, deliveries: 3 }, group: { sends: 1, deliveries: 1 }, match: { sends: 1, deliveries: 0 } });
    const metrics = (await api(port, 'GET', '/metrics')).text;
    expect(metrics).toMatch(/^c1m_kind_sends_total\{kind="photo"\} 1$/m);
    expect(metrics).toMatch(/^c1m_kind_deliveries_total\{kind="photo"\} 3$/m);
    expect(metrics).toMatch(/^c1m_kind_deliveries_total\{kind="user"\} 2$/m);

    expect((await api(port, 'DELETE', '/subscriptions', JSON.stringify([[2, 'photo:789'], [4, 'photo:789']]))).json).toEqual({ removed: 1 });
    expect((await api(port, 'GET', '/subscribers/photo:789')).json).toEqual([1, 3]);
  });

  it('counts sends per kind by name up to 32 topic kinds, the rest as other', async () => {
    c1m = await startServer();
    for (let k = 0; k < 40; k++) c1m.router.send(`kind${k}:1`, 'x');
    c1m.router.send(1, 'x');
    const kinds = c1m.stats().kinds;
    expect(Object.keys(kinds)).toHaveLength(1 + 32 + 1);
    expect(kinds).toMatchObject({ user: { sends: 1 }, kind0: { sends: 1 }, kind31: { sends: 1 }, other: { sends: 8, deliveries: 0 } });
  });

  it('refuses a bad subject with a 400 that says what a subject is, and changes nothing', async () => {
    c1m = await startServer({ maxUserId: 1000 });
    const port = c1m.apiPort;
    const bad: [string, string, string | undefined, RegExp][] = [
      ['POST', '/subscriptions', JSON.stringify([[1, 'photo:789'], [2, 'Photo:1']]), /pair 1 .*not a subject: "Photo:1" \(expected a user id, user:<id>, or kind:id/],
      ['POST', '/subscriptions', JSON.stringify([[1, 'photo:789'], ['photo:1', 2]]), /pair 1 .*a subscriber is a user, not photo:1/],
      ['POST', '/subscriptions', JSON.stringify([[1, 'photo:789'], [1, '2']]), /pair 1 .*not a user id: "2"/],
      ['POST', '/subscriptions', JSON.stringify([[1, 'user:1001']]), /pair 0 .*user id 1001 is above the limit of 1000/],
      ['POST', '/send/photo:', 'x', /not a subject: "photo:"/],
      ['POST', '/send/user:x', 'x', /not a user id: "x"/],
      ['POST', '/send/photo%3', 'x', /bad percent-encoding/],
      ['POST', `/send/photo:${'x'.repeat(65)}`, 'x', /not a subject/],
      ['GET', '/subscribers/a:b:c', undefined, /not a subject/],
      ['GET', '/subscriptions/photo:789', undefined, /not a user: 'photo:789' \(subscriptions are held by users\)/],
    ];
    for (const [method, path, body, why] of bad) {
      const answer = await api(port, method, path, body);
      expect(answer, `${method} ${path}`).toMatchObject({ status: 400, json: { error: expect.stringMatching(why) } });
    }
    expect(c1m.store.count()).toBe(0);
    expect(c1m.router.sends).toBe(0);
  });

  for (const transport of ['chunked', 'sse', 'ws'] as const) {
    it(`a topic's messages reach its subscribers' ${transport} streams, and a resume replays them with the user's own, once each, in id order`, async () => {
      c1m = await startServer();
      c1m.store.addSubscriptions([[1, 'photo:789'], [1, 2]]);
      const ids = transport === 'chunked' ? '?ids=1' : '';
      const first = await openStream(transport, c1m.port, 1, ids);
      clients.push(first);
      const sent = async (subject: string | number, text: string) => `${(await api(c1m!.apiPort, 'POST', `/send/${subject}`, text)).json.id} ${text}`;
      const seen = await sent('photo:789', 'seen');
      await until('the first comment', () => received(first).length === 1);
      expect(received(first)).toEqual([seen]);
      first.close();
      await until('the close', () => !c1m!.registry.isConnected(1));
      const missed = [await sent('photo:789', 'missed one'), await sent('photo:1', 'not for 1'), await sent(2, 'from a friend'), await sent('user:1', 'to 1'), await sent('photo:789', 'missed two')];
      const resumed = await openStream(transport, c1m.port, 1, `?lastEventId=${seen.split(' ')[0]}`);
      clients.push(resumed);
      const live = await sent('photo:789', 'live');
      await until('the replay and the live comment', () => received(resumed).length === 5);
      expect(received(resumed)).toEqual([missed[0], missed[2], missed[3], missed[4], live]);
    });
  }

  it('user:N and N are the same subject on the wire: /test/<id> gets the same bytes either way', async () => {
    c1m = await startServer();
    const raw = new RawClient(c1m.port, 'GET /test/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    clients.push(raw);
    await raw.until(/\r\n\r\n[0-9a-f]+\r\nWelcome[^\n]*\n/, 'the welcome');
    const welcomed = raw.text.length;
    await api(c1m.apiPort, 'POST', '/send/1', 'hello');
    await raw.until(/hello\n$/, 'hello');
    const plain = raw.text.slice(welcomed);
    await api(c1m.apiPort, 'POST', '/send/user:1', 'hello');
    await raw.until(/hello\n\r\n6\r\nhello\n$/, 'hello again');
    // uWS ends each chunk as it writes the next one's size.
    expect(plain).toBe('\r\n6\r\nhello\n');
    expect(raw.text.slice(welcomed)).toBe(plain + plain);
  });

  it('the backend client, embedding and the CLI take topics too', async () => {
    const db = join(tempDir(), 'c1m.db');
    expect(await runCli(['subs', 'add', '2:photo:789', '3:user:1', '--db', db])).toMatchObject({ code: 0, stdout: '{"added":2}\n' });
    const bad = await runCli(['subs', 'add', '2:Photo:1', '--db', db]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/'2:Photo:1' is not subscriber:subject .*not a subject: "Photo:1"/);
    const mutual = await runCli(['subs', 'add', '2:photo:1', '--mutual', '--db', db]);
    expect(mutual.code).not.toBe(0);
    expect(mutual.stderr).toMatch(/--mutual is for users \(friends\), and photo:1 is a topic/);
    expect(JSON.parse((await runCli(['subs', 'get', '2', '--db', db])).stdout)).toEqual({ user: 2, subscribers: [], subscriptions: ['photo:789'] });

    const server = await spawnServer(['--db', db]);
    try {
      const backend = new C1mClient({ url: `http://127.0.0.1:${server.apiPort}` });
      expect(await backend.subscribe([[4, 'photo:789'], [4, 'user:1']])).toBe(2);
      expect(await backend.subscribers('photo:789')).toEqual([2, 4]);
      expect(await backend.subscriptions(4)).toEqual([1, 'photo:789']);
      const stream = await openStream('chunked', server.port, 4);
      clients.push(stream);
      expect(await backend.send('photo:789', 'comment')).toMatchObject({ delivered: 1, id: expect.any(Number) });
      expect(await backend.send('user:1', 'to one')).toMatchObject({ delivered: 1 });
      await until('both', () => received(stream).length === 2);
      expect(received(stream)).toEqual(['comment', 'to one']);
      expect(await backend.unsubscribe([[4, 'photo:789']])).toBe(1);
      await expect(backend.send('photo:a/b', 'x')).rejects.toThrow(/not a subject: "photo:a\/b"/);
    } finally {
      await stopChild(server.child);
    }

    c1m = await startServer();
    c1m.store.addSubscriptions([[1, 'group:42']]);
    const stream = await openStream('chunked', c1m.port, 1);
    clients.push(stream);
    expect(c1m.router.send('group:42', 'embedded')).toBe(1);
    expect(() => c1m!.router.send('group', 'x')).toThrow(/not a subject: "group"/);
    await until('the embedded send', () => received(stream).length === 1);
    expect(received(stream)).toEqual(['embedded']);
  });
});

describe('topics a stream listens to while open', () => {
  for (const transport of ['chunked', 'sse', 'ws'] as const) {
    it(`?topics= on ${transport}: heard while open, once per stream beside a lasting subscription, gone with the stream, replayed on resume`, async () => {
      c1m = await startServer();
      c1m.store.addSubscriptions([[3, 'photo:789']]);
      const ids = transport === 'chunked' ? '?ids=1&' : '?';
      const [viewer, other, subscriber] = await Promise.all([
        openStream(transport, c1m.port, 1, `${ids}topics=photo:789,match:7`),
        openStream(transport, c1m.port, 2, ids.slice(0, -1)),
        openStream(transport, c1m.port, 3, `${ids}topics=photo:789`),
      ]);
      clients.push(viewer, other, subscriber);
      const sent = async (subject: string | number, text: string, delivered: number) => {
        const { json } = await api(c1m!.apiPort, 'POST', `/send/${subject}`, text);
        expect(json.delivered, text).toBe(delivered);
        return `${json.id} ${text}`;
      };
      const comment = await sent('photo:789', 'a comment', 2);
      const goal = await sent('match:7', 'goal', 1);
      await until('the topic messages', () => received(viewer).length === 2 && received(subscriber).length === 1);
      expect([received(viewer), received(other), received(subscriber)]).toEqual([[comment, goal], [], [comment]]);
      expect(c1m.registry.listenersOf('photo:789')).toBe(2);

      viewer.close();
      await until('the viewer gone', () => c1m!.registry.listenersOf('match:7') === 0);
      expect(c1m.registry.listenersOf('photo:789')).toBe(1);
      const missed = [await sent('photo:789', 'while away', 1), await sent(1, 'to the user', 0)];
      await sent('match:8', 'another match', 0);
      const back = await openStream(transport, c1m.port, 1, `?lastEventId=${goal.split(' ')[0]}&topics=photo:789,match:7`);
      clients.push(back);
      const live = await sent('match:7', 'live', 1);
      await until('the replay and the live message', () => received(back).length === 3);
      expect(received(back)).toEqual([...missed, live]);
    });
  }

  it("a topic's message sent while a resuming stream's replay is on its way reaches it once, after the replay: the holder listens to its topics", async () => {
    c1m = await startServer();
    const server = c1m;
    const sent = async (text: string) => `${(await api(server.apiPort, 'POST', '/send/photo:1', text)).json.id} ${text}`;
    const from = (await sent('start')).split(' ')[0];
    const replay = server.hub.replay!;
    let read = false;
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    server.hub.replay = async (user, after, budget, topics) => {
      const missed = replay(user, after, budget, topics);
      read = true;
      await answered;
      return missed;
    };
    const client = await openStream('sse', server.port, 1, `?lastEventId=${from}&topics=photo:1`);
    clients.push(client);
    await until('the replay read', () => read);
    const during = await sent('during');
    answer();
    const after = await sent('after');
    await until('the message after the hand-over', () => received(client).includes(after));
    expect(received(client)).toEqual([during, after]);
  });

  it('a stream that listens to a topic its user also subscribes to gets each message once, without ids too', async () => {
    c1m = await startServer({ historySeconds: 0 });
    c1m.store.addSubscriptions([[3, 'photo:789']]);
    const stream = await openStream('chunked', c1m.port, 3, '?topics=photo:789');
    clients.push(stream);
    expect(c1m.router.send('photo:789', 'once')).toBe(1);
    expect(c1m.router.send(3, 'sentinel')).toBe(1);
    await until('the sentinel', () => received(stream).includes('sentinel'));
    expect(received(stream)).toEqual(['once', 'sentinel']);
  });

  it('a resume from before what the history pruned of a listened topic is told its history is lost', async () => {
    c1m = await startServer({ historyPerSubject: 2 });
    const first = c1m.router.send('photo:1', 'kept a while');
    expect(first).toBe(0);
    const seen = c1m.stats().history!.lastId;
    for (const text of ['two', 'three', 'four']) c1m.router.send('photo:1', text);
    const [listening, not] = await Promise.all([
      openStream('sse', c1m.port, 1, `?lastEventId=${seen}&topics=photo:1`),
      openStream('sse', c1m.port, 2, `?lastEventId=${seen}&topics=photo:2`),
    ]);
    clients.push(listening, not);
    c1m.router.send(2, 'sentinel');
    await until('lost, and the sentinel', () => received(listening).length === 1 && received(not).length === 1);
    expect(received(listening)).toEqual(['lost expired']);
    expect(received(not)).toEqual([expect.stringMatching(/ sentinel$/)]);
  });

  it('a topic the token does not cover is refused with 403 before anything is read; old tokens still open their user only', async () => {
    const secret = 'topics test secret, at least 32 bytes';
    c1m = await startServer({ streamSecret: secret });
    const open = async (query: string) => {
      const client = await openStream('sse', c1m!.port, 5, query);
      clients.push(client);
      return client as SseClient;
    };
    const old = mintStreamToken(secret, 5, 600);
    const photos = mintStreamToken(secret, 5, 600, Date.now(), ['photo:*', 'match:7']);
    expect((await open(`?token=${old}`)).status).toBe(200);
    const refused = await open(`?token=${old}&topics=photo:789`);
    expect([refused.status, refused.body]).toEqual([403, 'token does not cover topic photo:789\n']);
    expect((await open(`?token=${photos}&topics=photo:789,match:7`)).status).toBe(200);
    expect((await open(`?token=${photos}&topics=photo:1,match:8`)).body).toBe('token does not cover topic match:8\n');
    const forged = photos.replace(/\.[^.]+(\.[^.]+)$/, `.${Buffer.from('match:*').toString('base64url')}$1`);
    expect((await open(`?token=${forged}&topics=match:8`)).body).toBe('bad signature\n');
    expect(() => mintStreamToken(secret, 5, 600, Date.now(), ['user:6'])).toThrow(/a token's topics are kind:id or kind:\*, not "user:6"/);
    expect(() => mintStreamToken(secret, 5, 600, Date.now(), ['photo'])).toThrow(/not "photo"/);
    const backend = new C1mClient({ url: `http://127.0.0.1:${c1m.apiPort}`, streamSecret: secret });
    expect((await open(`?token=${backend.streamToken(5, 600, ['group:42'])}&topics=group:42`)).status).toBe(200);
    const minted = await runCli(['token', '5', '--topics', 'group:*,match:7'], { env: { C1M_STREAM_SECRET: secret } });
    expect((await open(`?token=${minted.stdout.trim()}&topics=group:1,match:7`)).status).toBe(200);
    expect((await runCli(['token', '5', '--topics', 'group'], { env: { C1M_STREAM_SECRET: secret } })).stderr).toMatch(/a token's topics are kind:id or kind:\*, not "group"/);
    await until('the listeners', () => c1m!.registry.listenersOf('group:42') === 1 && c1m!.registry.listenersOf('group:1') === 1);
    expect(c1m.stats().authFailures).toBe(3);
  });

  it('a WebSocket subscribes and unsubscribes while open: each answered in order, heard from then on, refused ones change nothing', async () => {
    c1m = await startServer();
    const client = (await openStream('ws', c1m.port, 1, '?topics=match:7')) as WsClient;
    clients.push(client);
    const answers = () => client.frames.filter((f) => f.header === 'topics' || f.header === 'refused').map((f) => `${f.header} ${f.payload}`);
    const command = async (text: string) => {
      const before = answers().length;
      client.send(0x1, Buffer.from(text));
      await until(`the answer to ${text}`, () => answers().length > before);
      return answers()[before];
    };
    expect(await command('subscribe photo:789,group:1')).toBe('topics match:7,photo:789,group:1');
    expect(c1m.registry.listenersOf('photo:789')).toBe(1);
    const comment = c1m.router.send('photo:789', 'a comment');
    expect(comment).toBe(1);
    expect(await command('unsubscribe photo:789,match:8')).toBe('topics match:7,group:1');
    expect(c1m.router.send('photo:789', 'not heard')).toBe(0);
    expect(c1m.router.send('group:1', 'to the group')).toBe(1);
    // Bad input: nothing listened to, the stream stays open.
    for (const [text, why] of [
      ['subscribe Photo:1', 'refused bad topic in subscribe: not a subject: "Photo:1" (expected a user id, user:<id>, or kind:id'],
      ['subscribe user:5', 'refused subscribe lists topics, not users: user:5'],
      ['subscribe ', 'topics match:7,group:1'],
      [`subscribe ${Array.from({ length: 15 }, (_, i) => `photo:${i}`).join(',')}`, 'refused a stream listens to at most 16 topics, not 17'],
    ] as const) expect(await command(text), text).toMatch(why);
    expect(c1m.registry.listenersOf('photo:0')).toBe(0);
    expect(await command(`subscribe ${Array.from({ length: 14 }, (_, i) => `photo:${i}`).join(',')}`)).toMatch(/^topics match:7,group:1,photo:0,.*,photo:13$/);
    expect(received(client).filter((m) => !/^(topics|refused) /.test(m)).map((m) => m.slice(m.indexOf(' ') + 1))).toEqual(['a comment', 'to the group']);
    // Gone with the stream: what it listens to now, not what it opened with.
    client.close();
    await until('the logout', () => c1m!.registry.connections === 0);
    for (const topic of ['match:7', 'group:1', 'photo:0', 'photo:789']) expect(c1m.registry.listenersOf(topic), topic).toBe(0);
  });

  it('a WebSocket that changes its topics faster than 10 a second, past a burst of 20, is closed with 1008', async () => {
    c1m = await startServer();
    const client = (await openStream('ws', c1m.port, 1)) as WsClient;
    clients.push(client);
    // 60 changes in one write: even read over a few hundred ms they outrun the budget.
    for (let i = 0; i < 60; i++) client.send(0x1, Buffer.from(`${i % 2 ? 'unsubscribe' : 'subscribe'} photo:1`));
    await until('the close', () => client.closeCode !== undefined);
    expect(client.closeCode).toBe(1008);
    const answered = client.frames.filter((f) => f.header === 'topics').length;
    expect(answered).toBeGreaterThanOrEqual(20);
    expect(answered).toBeLessThan(60);
    await until('the logout', () => c1m!.registry.connections === 0);
    expect(c1m.registry.listenersOf('photo:1')).toBe(0);
  });

  it("a WebSocket's subscribe is checked against its token's scope: a topic not covered is refused and not listened to", async () => {
    const secret = 'subscribe test secret, at least 32 bytes';
    c1m = await startServer({ streamSecret: secret });
    const scoped = (await openStream('ws', c1m.port, 5, `?token=${mintStreamToken(secret, 5, 600, Date.now(), ['photo:*', 'match:7'])}`)) as WsClient;
    const old = (await openStream('ws', c1m.port, 6, `?token=${mintStreamToken(secret, 6, 600)}`)) as WsClient;
    clients.push(scoped, old);
    const answer = async (client: WsClient, text: string) => {
      const count = client.frames.length;
      client.send(0x1, Buffer.from(text));
      await until(`the answer to ${text}`, () => client.frames.length > count);
      return `${client.frames[count].header} ${client.frames[count].payload}`;
    };
    expect(await answer(scoped, 'subscribe photo:1,match:8')).toBe('refused token does not cover topic match:8');
    expect(await answer(scoped, 'subscribe photo:1,match:7')).toBe('topics photo:1,match:7');
    expect(await answer(old, 'subscribe photo:1')).toBe('refused token does not cover topic photo:1');
    expect([c1m.registry.listenersOf('photo:1'), c1m.registry.listenersOf('match:8')]).toEqual([1, 0]);
    expect(await answer(old, 'unsubscribe photo:1')).toBe('topics ');
  });

  it("streams share the registry's topic lists: none is NO_TOPICS, one topic listened to already is its listeners' list, and it goes with the last listener", () => {
    const registry = new Registry();
    const stream = (user: number, topics: string[]) => ({ user, topics: registry.intern(topics), write: () => 1, close: () => {} });
    expect(registry.intern([])).toBe(NO_TOPICS);
    const first = stream(1, ['photo:1']);
    expect(stream(2, ['photo:1']).topics).not.toBe(first.topics);
    registry.login(first);
    const second = stream(2, ['photo:1']);
    expect(second.topics).toBe(first.topics);
    expect(stream(3, ['photo:1', 'photo:2']).topics).toEqual(['photo:1', 'photo:2']);
    registry.login(second);
    registry.setTopics(second, ['photo:2']);
    expect([registry.listenersOf('photo:1'), registry.listenersOf('photo:2')]).toEqual([1, 1]);
    expect(stream(4, ['photo:2']).topics).toBe(second.topics);
    registry.logout(first);
    expect(stream(5, ['photo:1']).topics).not.toBe(first.topics);
  });

  it('refuses bad topic lists with 400, and opens nothing', async () => {
    c1m = await startServer();
    for (const [query, why] of [
      ['?topics=Photo:1', /bad topic in \?topics=: not a subject: "Photo:1"/],
      ['?topics=photo:1,', /bad topic in \?topics=: not a subject: ""/],
      ['?topics=user:5', /\?topics= lists topics, not users: user:5/],
      [`?topics=${Array.from({ length: 17 }, (_, i) => `photo:${i}`).join(',')}`, /at most 16 topics, not 17/],
    ] as const) {
      const client = await openStream('chunked', c1m.port, 1, query);
      clients.push(client);
      await until('the refusal', () => client.ended);
      expect((client as StreamClient).status, query).toBe(400);
      expect((client as StreamClient).lines.join('\n'), query).toMatch(why);
    }
    expect(c1m.registry.connections).toBe(0);
  });
});
