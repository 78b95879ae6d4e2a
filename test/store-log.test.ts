/**
 * The replicated subscription store (issue 28 step 2, cluster/store-log.ts) on real nats-servers with
 * JetStream, configured as `c1m nats-config --jetstream` writes them, reached with the routers'
 * credentials: `c1m router --replicas` processes and store views in this process, each on a SQLite file
 * of its own, applying one stream. Three servers and the loss of one: store-log-r3.test.ts.
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { connectJetStream } from '../cluster/jetstream.js';
import { ROUTER_INBOX } from '../cluster/nats-auth.js';
import { CorruptChangeError, decodeChange, encodeEdges, encodePairs } from '../cluster/store-changes.js';
import { STORE_STREAM, STORE_SUBJECT } from '../cluster/store-log.js';
import { MANIFEST_HEADER, MANIFEST_SUBJECT, SNAPSHOT_STREAM, SNAPSHOT_SUBJECT } from '../cluster/store-snapshot.js';
import { spawnJetStreamServers, spawnRouter, type JetStreamServers } from '../loadgen/server-process.js';
import { openStore } from '../subsmanager/store.js';
import { longestAnswer } from '../bench/probe.js';
import { api, runCli, stopChild, tempDir } from './helpers.js';
import { appliedRow, closeViews, contentOf, openView, plainStore } from './store-views.js';
import { until } from '../bench/until.js';

const json = { 'content-type': 'application/json' };

afterAll(closeViews);

describe('one nats-server with JetStream: routers and views of one store stream', () => {
  let servers: JetStreamServers;
  let dir: string;
  const routers: Awaited<ReturnType<typeof spawnRouter>>[] = [];
  const routerArgs = (db: string) => ['--nats', servers.urls, '--nats-creds', servers.creds, '--db', join(dir, db), '--replicas', '1', '--history-seconds', '0'];

  beforeAll(async () => {
    servers = await spawnJetStreamServers(1, tempDir());
    dir = tempDir();
    routers.push(await spawnRouter(routerArgs('a.db')), await spawnRouter(routerArgs('b.db')));
  }, 30_000);

  afterAll(async () => {
    for (const router of routers) await stopChild(router.child);
    for (const { child } of servers?.servers.values() ?? []) await stopChild(child);
  });

  test("a pair added through one router's API is seen by the other's; counts answered as applied; removals too", async () => {
    const [a, b] = routers.map((r) => r.apiPort);
    const subscribers = async (port: number, subject: string) => (await api(port, 'GET', `/subscribers/${subject}`)).json as unknown[];
    const change = async (port: number, method: string, pairs: unknown) => api(port, method, '/subscriptions', JSON.stringify(pairs), json);

    expect((await change(a, 'POST', [[1, 2], [3, 2], [1, 'photo:9']])).json).toEqual({ added: 3 });
    // Read your own write: the answer came once this router's view applied it.
    expect(await subscribers(a, '2')).toEqual([1, 3]);
    const eventually = (port: number, subject: string, expected: unknown[]) =>
      until('the subscribers', async () => { expect(await subscribers(port, subject)).toEqual(expected); return true; }, 5000, 20);
    await eventually(b, '2', [1, 3]);
    expect(await subscribers(b, 'photo%3A9')).toEqual([1]);

    expect((await change(a, 'POST', [[1, 2], [3, 2]])).json).toEqual({ added: 0 });
    expect((await change(b, 'POST', [[1, 2], [4, 2]])).json).toEqual({ added: 1 });
    expect((await change(b, 'DELETE', [[1, 2], [5, 6]])).json).toEqual({ removed: 1 });
    await eventually(a, '2', [3, 4]);
    expect((await api(b, 'GET', '/subscriptions/1')).json).toEqual(['photo:9']);
    expect((await api(a, 'GET', '/stats')).json.store).toMatchObject({ stream: STORE_STREAM, replicas: 1, applied: 4, skipped: 0 });

    // A third router given the first one's file would apply every change twice: refused.
    const third = await spawnRouter(routerArgs('a.db')).then(
      (router) => (routers.push(router), 'started'),
      (err: Error) => err.message,
    );
    expect(third).toMatch(/a\.db is the store view of another router \(process [^:]+:\d+\): give each router a --db of its own/);
  });

  test('a view restarted applies exactly the changes it missed, once (its last sequence is in its file)', async () => {
    const a = await openView(servers, join(dir, 'restart-a.db'));
    let b = await openView(servers, join(dir, 'restart-b.db'));
    await a.store.addSubscriptions([[10, 11]]);
    await until('the change on the second view', () => b.store.getSubscribers(11).length === 1);
    const before = b.store.stats().applied;
    await b.close();

    await a.store.addSubscriptions([[10, 12]]);
    await a.store.removeSubscriptions([[10, 11]]);
    await a.store.addSubscriptions([[13, 12], [13, 'room:1']]);
    await a.store.addSubscriptions([[14, 12]]);
    await a.store.removeSubscriptions([[14, 12]]);

    b = await openView(servers, b.db);
    expect(b.store.stats()).toMatchObject({ applied: before + 5, appliedSinceOpen: 5 });
    expect(appliedRow(b.db)).toEqual([{ stream: expect.stringMatching(/^C1M_STORE created /), seq: before + 5 }]);
    expect([b.store.getSubscribers(11), b.store.getSubscribers(12), b.store.getSubscribers('room:1')]).toEqual([[], [10, 13], [13]]);
    expect(contentOf(b.db)).toEqual(contentOf(a.db));
    await Promise.all([a.close(), b.close()]);
  });

  test('bad input is refused before anything is published; a message that is no change is logged and skipped by every view alike', async () => {
    const [a, b] = routers.map((r) => r.apiPort);
    const view = await openView(servers, join(dir, 'corrupt.db'));
    const jsm = await jetstreamManager(view.nc);
    const last = async () => (await jsm.streams.info(STORE_STREAM)).state.last_seq;
    const before = await last();
    for (const body of ['[[1]]', '[[0, 5]]', '[[1, "not a subject!"]]', 'not json']) expect((await api(a, 'POST', '/subscriptions', body, json)).status).toBe(400);
    await expect(view.store.addSubscriptions([[1, -2]] as never)).rejects.toThrow(/pair 0/);
    const badFile = join(dir, 'bad-edges.txt');
    writeFileSync(badFile, '1 2\n3 x\n');
    const load = await runCli(['friends', 'load', badFile, '--nats', servers.urls, '--nats-creds', servers.creds]);
    expect([load.code, load.stderr.trim()]).toEqual([1, `error: ${badFile}:2: expected two positive integers, got "3 x"`]);
    expect(await last()).toBe(before);

    // Published by hand with the routers' credentials: an unknown kind, and edges whose length is not whole edges.
    const js = jetstream(view.nc);
    await js.publish(STORE_SUBJECT, Uint8Array.of(9, 9, 9));
    await js.publish(STORE_SUBJECT, Uint8Array.of(3, 0, 0, 0, 1, 0, 0));
    expect((await api(b, 'POST', '/subscriptions', '[[70000, 70001]]', json)).json).toEqual({ added: 1 });
    await until('the change after the corrupt ones', () => view.store.getSubscribers(70001).length === 1);
    expect(view.store.stats()).toMatchObject({ applied: before + 3, skipped: 2 });
    expect(view.lines.filter((l) => l.msg === 'skipped a message of the store stream that is not a change').map((l) => [l.seq, l.error])).toEqual([
      [before + 1, 'a change of unknown kind 9'],
      [before + 2, 'a change of edges with a bad header or length (7 bytes)'],
    ]);
    for (const port of [a, b]) expect((await api(port, 'GET', '/stats')).json.store).toMatchObject({ applied: before + 3, skipped: 2 });
    expect((await api(a, 'GET', '/subscribers/70001')).json).toEqual([70000]);
    await view.close();
  });
});

describe('an empty data dir, on a stream of its own', () => {
  let servers: JetStreamServers;
  let dir: string;
  const routers: Awaited<ReturnType<typeof spawnRouter>>[] = [];

  beforeAll(async () => {
    servers = await spawnJetStreamServers(1, tempDir());
    dir = tempDir();
  }, 30_000);

  afterAll(async () => {
    for (const router of routers) await stopChild(router.child);
    for (const { child } of servers?.servers.values() ?? []) await stopChild(child);
  });

  test('a view on an empty data dir rebuilds the whole graph (a bulk load of several messages and the changes after it) and answers as the others', async () => {
    const graph = join(dir, 'graph.txt');
    expect((await runCli(['friends', 'generate', '--users', '60000', '--m', '3', '--out', graph])).code).toBe(0);
    const a = await openView(servers, join(dir, 'rebuild-a.db'));
    const loaded = await runCli(['friends', 'load', graph, '--nats', servers.urls, '--nats-creds', servers.creds]);
    expect(loaded.stderr).toBe('');
    expect(loaded.stdout).toMatch(/published .* \(mutual\): 179,994 edges in 2 messages to C1M_STORE/);
    await a.store.removeSubscriptions([[1, 2], [2, 1]]);
    await a.store.addSubscriptions([[1, 'room:7'], [59_999, 60_000]]);

    // What the same load and changes make of a plain SQLite store, written without the stream.
    const plain = join(dir, 'plain.db');
    expect((await runCli(['friends', 'load', graph, '--db', plain])).code).toBe(0);
    const reference = openStore(plain);
    reference.removeSubscriptions([[1, 2], [2, 1]]);
    reference.addSubscriptions([[1, 'room:7'], [59_999, 60_000]]);
    reference.close();

    const rebuilt = await openView(servers, join(tempDir(), 'empty', 'c1m.db'));
    expect(rebuilt.lines.some((l) => l.msg === 'store view caught up')).toBe(true);
    expect(rebuilt.store.count()).toBe(a.store.count());
    expect(contentOf(rebuilt.db)).toEqual(contentOf(plain));
    expect(contentOf(a.db)).toEqual(contentOf(plain));
    for (const subject of [1, 2, 3, 4, 5000, 59_999, 60_000, 'room:7']) expect(rebuilt.store.getSubscribers(subject)).toEqual(a.store.getSubscribers(subject));
    expect(rebuilt.store.getSubscribers(2)).not.toContain(1);

    // A router on an empty data dir listens only once its view has caught up, and says so meanwhile.
    const router = await spawnRouter(['--nats', servers.urls, '--nats-creds', servers.creds, '--db', join(dir, 'router.db'), '--replicas', '1', '--history-seconds', '0']);
    routers.push(router);
    const said = (msg: string) => router.output().indexOf(`"msg":"${msg}"`);
    expect(said('store view catching up with the stream: no sends or lookups until it has')).toBeGreaterThan(-1);
    expect(said('store view caught up')).toBeGreaterThan(said('store view catching up with the stream: no sends or lookups until it has'));
    expect(said('c1m router listening')).toBeGreaterThan(said('store view caught up'));
    for (const subject of [2, 5000, 60_000]) expect((await api(router.apiPort, 'GET', `/subscribers/${subject}`)).json).toEqual(a.store.getSubscribers(subject));
    await Promise.all([a.close(), rebuilt.close()]);

    // The stream gone: a write is answered 503, saying it was not acknowledged; the view is unchanged.
    for (const { child } of servers.servers.values()) await stopChild(child);
    const refused = await api(router.apiPort, 'POST', '/subscriptions', '[[70000, 70001]]', json);
    expect(refused.status).toBe(503);
    expect(refused.json.error).toMatch(/^the stream C1M_STORE did not acknowledge the change .*: it may or may not be applied; retry/);
    expect((await api(router.apiPort, 'GET', '/subscribers/70001')).json).toEqual([]);
  }, 40_000);
});

describe('snapshots: an empty view loads the newest one, then the stream after it', () => {
  let servers: JetStreamServers;
  let dir: string;

  beforeAll(async () => {
    servers = await spawnJetStreamServers(1, tempDir());
    dir = tempDir();
  }, 30_000);

  afterAll(async () => {
    for (const { child } of servers?.servers.values() ?? []) await stopChild(child);
  });

  const snapshot = (db: string, ...more: string[]) => runCli(['friends', 'snapshot', '--db', db, '--nats', servers.urls, '--nats-creds', servers.creds, ...more]);
  const newView = () => openView(servers, join(tempDir(), 'empty', 'c1m.db'));

  test("a snapshot with the stream purged up to it: a new view loads it and applies only the tail, the same rows as a plain store; a view behind the purge comes back by itself; a snapshot cut short leaves the one before it; one that does not read is refused and nothing is lost", async () => {
    const graph = join(dir, 'graph.txt');
    expect((await runCli(['friends', 'generate', '--users', '60000', '--m', '3', '--out', graph])).code).toBe(0);
    const a = await openView(servers, join(dir, 'a.db'));
    let behind = await openView(servers, join(dir, 'behind.db'));
    expect((await runCli(['friends', 'load', graph, '--nats', servers.urls, '--nats-creds', servers.creds])).code).toBe(0);
    await a.store.removeSubscriptions([[1, 2], [2, 1]]);
    await until('the second view', () => behind.store.stats().applied === a.store.stats().applied);
    await behind.close();
    await a.store.addSubscriptions([[1, 'room:7']]);

    const written = await snapshot(a.db, '--purge');
    expect(written.stderr).toBe('');
    const seq = a.store.stats().applied;
    expect(written.stdout).toMatch(new RegExp(`^snapshot of .*a\\.db at sequence ${seq}: .* MiB in \\d+ messages in .* s; the store's stream purged up to ${seq}\\n$`));
    const jsm = await jetstreamManager(a.nc);
    expect((await jsm.streams.info(STORE_STREAM)).state.first_seq).toBe(seq + 1);
    // The tail: changes after the snapshot.
    await a.store.addSubscriptions([[59_999, 60_000]]);
    await a.store.removeSubscriptions([[3, 1]]);

    const expected = await plainStore(graph, (store) => {
      store.removeSubscriptions([[1, 2], [2, 1]]);
      store.addSubscriptions([[1, 'room:7'], [59_999, 60_000]]);
      store.removeSubscriptions([[3, 1]]);
    });
    const rebuilt = await newView();
    expect(rebuilt.lines.find((l) => l.msg === 'store view loaded from a snapshot')).toMatchObject({ seq });
    expect(rebuilt.store.stats()).toMatchObject({ applied: seq + 2, appliedSinceOpen: 2 });
    expect(contentOf(rebuilt.db)).toEqual(expected);
    expect(contentOf(a.db)).toEqual(expected);
    await rebuilt.close();

    // A view that had not applied the snapshot's sequence (its changes since are gone from the stream) comes back by itself.
    const back = await openView(servers, behind.db);
    expect(back.lines.find((l) => l.msg === 'store view behind the purged stream: removed, to be loaded from the snapshot')?.error).toMatch(
      /behind\.db applied the stream C1M_STORE through sequence \d+, and its changes before \d+ are purged \(kept in a snapshot\)$/,
    );
    expect(back.lines.find((l) => l.msg === 'store view loaded from a snapshot')).toMatchObject({ seq });
    expect(contentOf(back.db)).toEqual(expected);
    await back.close();

    // A writer cut short (a chunk after the newest manifest, and no manifest of its own): the newest complete snapshot still loads.
    const js = jetstream(a.nc);
    const manifest = (await jsm.streams.getMessage(SNAPSHOT_STREAM, { last_by_subj: MANIFEST_SUBJECT }))!;
    await js.publish(SNAPSHOT_SUBJECT, Uint8Array.of(1, 2, 3));
    const afterCut = await newView();
    expect(afterCut.lines.find((l) => l.msg === 'store view loaded from a snapshot')).toMatchObject({ seq });
    expect(contentOf(afterCut.db)).toEqual(expected);
    await afterCut.close();
    // A manifest whose SHA-256 is not its chunks': refused, no file made.
    const marked = headers();
    marked.set(MANIFEST_HEADER, '1');
    await js.publish(MANIFEST_SUBJECT, JSON.stringify({ ...manifest.json<object>(), sha256: '0'.repeat(64) }), { headers: marked });
    const empty = join(tempDir(), 'c1m.db');
    await expect(openView(servers, empty)).rejects.toThrow(
      new RegExp(`^${empty} is new, and the stream C1M_STORE starts at sequence ${seq + 1} \\(purged up to a snapshot\\), whose snapshot cannot be loaded: the snapshot's chunks are \\d+ bytes of SHA-256 [0-9a-f]{64}, its manifest says \\d+ of 0{64}$`),
    );
    // A message on the manifests' subject that is no manifest: refused too.
    await js.publish(MANIFEST_SUBJECT, Uint8Array.of(1, 2, 3));
    await expect(openView(servers, empty)).rejects.toThrow(/whose snapshot cannot be loaded: the newest message on the manifests' subject is no manifest$/);
    expect(existsSync(empty)).toBe(false);
    expect(readdirSync(dirname(empty))).toEqual([]);
    await a.close();
  }, 60_000);

  test('a snapshot of no file, or of a store that is no view, is refused saying so, and nothing is published', async () => {
    const nc = await connectJetStream(servers.urls, { name: 'snapshot-probe', creds: servers.creds, inboxPrefix: ROUTER_INBOX, persistent: false });
    const jsm = await jetstreamManager(nc);
    const before = await jsm.streams.info(SNAPSHOT_STREAM).then((info) => info.state.messages, () => 0);
    const missing = join(tempDir(), 'missing.db');
    const noFile = await snapshot(missing);
    expect(noFile.code).not.toBe(0);
    expect(noFile.stderr).toContain(`${missing}: no such file (give the --db of a router on this host)`);
    const plain = join(tempDir(), 'plain.db');
    openStore(plain).close();
    const notView = await snapshot(plain);
    expect(notView.code).not.toBe(0);
    expect(notView.stderr).toContain(`${plain} is no view of ${STORE_STREAM}`);
    expect(await jsm.streams.info(SNAPSHOT_STREAM).then((info) => info.state.messages, () => 0)).toBe(before);
    await nc.close();
  });
});

describe('snapshots, the stream not purged', () => {
  let servers: JetStreamServers;

  beforeAll(async () => {
    servers = await spawnJetStreamServers(1, tempDir());
  }, 30_000);

  afterAll(async () => {
    for (const { child } of servers?.servers.values() ?? []) await stopChild(child);
  });

  test('a new view loads the snapshot and applies the tail; a snapshot that does not read is logged, and the view rebuilt from the whole stream', async () => {
    const a = await openView(servers, join(tempDir(), 'a.db'));
    await a.store.addSubscriptions([[1, 2], [3, 2]]);
    const written = await runCli(['friends', 'snapshot', '--db', a.db, '--nats', servers.urls, '--nats-creds', servers.creds]);
    expect(written.stdout).toMatch(/^snapshot of .* at sequence 1: .* in 1 messages in .* s\n$/);
    await a.store.removeSubscriptions([[1, 2]]);
    const fromSnapshot = await openView(servers, join(tempDir(), 'c1m.db'));
    expect(fromSnapshot.store.stats()).toMatchObject({ applied: 2, appliedSinceOpen: 1 });
    expect(contentOf(fromSnapshot.db)).toEqual(contentOf(a.db));
    // Opened again with nothing to catch up and closed at once: the consumer it was making meanwhile is stopped too.
    await fromSnapshot.close();
    const again = await openView(servers, fromSnapshot.db);
    await again.close();

    // Its one chunk deleted.
    const jsm = await jetstreamManager(a.nc);
    const manifest = (await jsm.streams.getMessage(SNAPSHOT_STREAM, { last_by_subj: MANIFEST_SUBJECT }))!.json<{ first: number }>();
    await jsm.streams.deleteMessage(SNAPSHOT_STREAM, manifest.first);
    const whole = await openView(servers, join(tempDir(), 'c1m.db'));
    expect(whole.lines.filter((l) => l.msg === 'the store snapshot cannot be loaded: the view is rebuilt from the whole stream').map((l) => l.error)).toEqual([
      `chunk 0 of the snapshot (sequence ${manifest.first}) is missing`,
    ]);
    expect(whole.store.stats()).toMatchObject({ applied: 2, appliedSinceOpen: 2 });
    expect(contentOf(whole.db)).toEqual(contentOf(a.db));
    await Promise.all([a.close(), whole.close()]);
  }, 30_000);
});

describe('a router serving while a bulk load of several messages is applied', () => {
  let servers: JetStreamServers;
  let dir: string;
  let router: Awaited<ReturnType<typeof spawnRouter>> | undefined;

  beforeAll(async () => {
    servers = await spawnJetStreamServers(1, tempDir());
    dir = tempDir();
  }, 30_000);

  afterAll(async () => {
    if (router) await stopChild(router.child);
    for (const { child } of servers?.servers.values() ?? []) await stopChild(child);
  });

  test('it answers lookups within 400 ms throughout, and sends (applied on the main thread, each message stalled it about a second); its view ends as a plain store', async () => {
    const graph = join(dir, 'graph.txt');
    expect((await runCli(['friends', 'generate', '--users', '200000', '--m', '5', '--out', graph])).code).toBe(0);
    const plain = join(dir, 'plain.db');
    expect((await runCli(['friends', 'load', graph, '--db', plain])).code).toBe(0);
    const db = join(dir, 'router.db');
    router = await spawnRouter(['--nats', servers.urls, '--nats-creds', servers.creds, '--db', db, '--replicas', '1', '--history-seconds', '60']);
    const { apiPort } = router;
    expect((await api(apiPort, 'POST', '/subscriptions', '[[1, 2]]', json)).json).toEqual({ added: 1 });

    const applied = async () => ((await api(apiPort, 'GET', '/stats')).json.store as { applied: number }).applied;
    const loadedAndApplied = (async () => {
      const loaded = await runCli(['friends', 'load', graph, '--nats', servers.urls, '--nats-creds', servers.creds]);
      const messages = Number(/ in (\d+) messages to C1M_STORE/.exec(loaded.stdout)?.[1]);
      expect(messages).toBeGreaterThanOrEqual(6);
      await until('the view to apply every message', async () => { expect(await applied()).toBe(1 + messages); return true; }, 60_000, 100);
    })();
    let asks = 0;
    const lookup = async () => {
      const { status } = ++asks % 2 ? await api(apiPort, 'GET', '/subscribers/2') : await api(apiPort, 'GET', '/stats');
      expect(status).toBe(200);
    };
    // Sends are answered once JetStream keeps them in the history's stream, on the server the load is busy with: not timed.
    const send = async () => expect((await api(apiPort, 'POST', '/send/2', 'during the load')).status).toBe(200);
    const [{ longestMs, answers }, sends] = await Promise.all([longestAnswer(lookup, loadedAndApplied), longestAnswer(send, loadedAndApplied)]);
    await loadedAndApplied;
    expect(Math.min(answers, sends.answers)).toBeGreaterThan(20);
    expect(longestMs).toBeLessThan(400);

    const reference = openStore(plain);
    reference.addSubscriptions([[1, 2]]);
    reference.close();
    expect(contentOf(db)).toEqual(contentOf(plain));
  }, 120_000);
});

describe('the changes on the stream', () => {
  test('pairs round-trip, and split into messages of at most the bytes given', () => {
    const pairs: [number, number | string][] = Array.from({ length: 1000 }, (_, i) => [i + 1, i % 3 ? i + 2 : `photo:${i}`]);
    const [one] = encodePairs('add', pairs, 1 << 20);
    expect(decodeChange(one)).toEqual({ kind: 'add', pairs });
    const split = encodePairs('remove', pairs, 2000);
    expect(split.length).toBeGreaterThan(4);
    expect(Math.max(...split.map((m) => m.length))).toBeLessThanOrEqual(2000);
    expect(split.flatMap((m) => (decodeChange(m) as { pairs: unknown[] }).pairs)).toEqual(pairs);
  });

  test('edges round-trip as u32, or float64 above 2^32 - 1, in messages of at most the bytes given', () => {
    for (const big of [7, 2 ** 40]) {
      const ids = Float64Array.from([1, 2, 3, big, 5, 6, 7, 8, 9, 10]);
      const messages = [...encodeEdges({ ids, count: 5, maxId: big }, true, 4 + 2 * 2 * (big > 2 ** 32 ? 8 : 4))];
      expect(messages.map((m) => m.edges)).toEqual([2, 2, 1]);
      const decoded = messages.map((m) => decodeChange(m.data));
      expect(decoded.every((c) => c.kind === 'edges' && c.mutual)).toBe(true);
      expect(decoded.flatMap((c) => [...(c as { ids: Float64Array }).ids])).toEqual([...ids]);
    }
  });

  test.each([
    ['empty', []],
    ['an unknown kind', [7, 1, 2]],
    ['pairs that are not msgpack pairs', [1, 0xc1]],
    ['a pair with a bad subject', [...encodePairs('add', [[1, 'x y' as never]], 100)[0]]],
    ['edges of a half edge', [3, 0, 0, 0, 1, 0, 0, 0]],
    ['edges with unknown flags', [3, 4, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]],
    ['edges with an id 0', [3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]],
  ])('%s: CorruptChangeError', (_, bytes) => {
    expect(() => decodeChange(Uint8Array.from(bytes as number[]))).toThrow(CorruptChangeError);
  });
});
