/**
 * Snapshots of the replicated subscription store with no operator (cluster/store-snapshot-auto.ts), on a real
 * nats-server with JetStream and the routers' credentials: the router leading partition 0 writes one by itself and
 * purges the store's stream; routers on an empty data dir, or stopped behind the purge, come back by themselves;
 * two writers at once (cluster/store-snapshot-write.ts's fence). Snapshots written by hand: store-log.test.ts.
 */
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { connectJetStream } from '../cluster/jetstream.js';
import { ROUTER_INBOX } from '../cluster/nats-auth.js';
import { STORE_STREAM, type StoreLogStats } from '../cluster/store-log.js';
import { newestManifest, SNAPSHOT_STREAM, SnapshotError } from '../cluster/store-snapshot.js';
import { copyView, publishSnapshot } from '../cluster/store-snapshot-write.js';
import { spawnJetStreamServers, spawnRouter, type JetStreamServers } from '../loadgen/server-process.js';
import { until } from '../bench/until.js';
import { api, runCli, stopChild, tempDir } from './helpers.js';
import { closeViews, contentOf, openView, plainStore } from './store-views.js';

const json = { 'content-type': 'application/json' };

afterAll(closeViews);

/** One nats-server, a graph of 20,000 users (60,000 edges: about 0.5 MB in the store's stream, 2.4 MB in a view), and a JetStream client of the test's own. */
function setUp() {
  const s = { servers: undefined as unknown as JetStreamServers, dir: '', graph: '', nc: undefined as unknown as NatsConnection, jsm: undefined as unknown as JetStreamManager };
  beforeAll(async () => {
    s.servers = await spawnJetStreamServers(1, tempDir());
    s.dir = tempDir();
    s.graph = join(s.dir, 'graph.txt');
    expect((await runCli(['friends', 'generate', '--users', '20000', '--m', '3', '--out', s.graph])).code).toBe(0);
    s.nc = await connectJetStream(s.servers.urls, { name: 'test-snapshots', creds: s.servers.creds, inboxPrefix: ROUTER_INBOX, persistent: false });
    s.jsm = await jetstreamManager(s.nc);
  }, 30_000);
  afterAll(async () => {
    await s.nc?.close();
    for (const { child } of s.servers?.servers.values() ?? []) await stopChild(child);
  });
  return s;
}

const loadThroughStream = async (servers: JetStreamServers, graph: string) => expect((await runCli(['friends', 'load', graph, '--nats', servers.urls, '--nats-creds', servers.creds])).code).toBe(0);

describe('the router leading partition 0 writes snapshots by itself', () => {
  const s = setUp();
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const child of children) await stopChild(child);
  });

  test('once the stream holds more than its view it writes one and purges the stream; a router on an empty data dir loads it and applies only the tail; a router stopped behind the purge comes back by itself with every subscription; the snapshot lost, it writes one again', async () => {
    const { servers, dir, graph, jsm } = s;
    const router = async (db: string, ...more: string[]) => {
      const started = await spawnRouter(['--nats', servers.urls, '--nats-creds', servers.creds, '--db', join(dir, db), '--replicas', '1', ...more]);
      children.push(started.child);
      return started;
    };
    const change = (port: number, method: string, pairs: unknown) => api(port, method, '/subscriptions', JSON.stringify(pairs), json);
    const storeStats = async (port: number) => (await api(port, 'GET', '/stats')).json.store as StoreLogStats;
    const logged = (output: string, msg: string) => output.split('\n').filter((line) => line.includes(`"msg":"${msg}"`)).map((line) => JSON.parse(line) as Record<string, number>);

    // The writer keeps a history (a router leads partition 0 only then); the other router keeps none, and so writes no snapshot.
    const writer = await router('writer.db', '--history-seconds', '60', '--snapshot-mib', '1');
    let behind = await router('behind.db', '--history-seconds', '0');
    await loadThroughStream(servers, graph);
    expect((await change(writer.apiPort, 'POST', [[5, 'room:5']])).json).toEqual({ added: 1 });
    const last = (await jsm.streams.info(STORE_STREAM)).state.last_seq;
    await until('the other router to apply it', async () => (await storeStats(behind.apiPort)).applied === last);
    await stopChild(behind.child);

    // The same graph loaded again and again: the stream grows, the views do not, until the stream holds more than the writer's view.
    for (let i = 0; i < 6; i++) await loadThroughStream(servers, graph);
    const wrote = await until('the writer to write a snapshot', () => logged(writer.output(), 'wrote a store snapshot and purged the store stream up to it')[0], 30_000, 100);
    expect(wrote).toMatchObject({ why: 'the stream holds more than the view' });
    expect(wrote.streamBytes).toBeGreaterThan(wrote.viewBytes);
    expect((await jsm.streams.info(STORE_STREAM)).state.first_seq).toBe(wrote.seq + 1);
    expect((await newestManifest(jsm))?.seq).toBe(wrote.seq);

    // The tail: changes after the snapshot.
    expect((await change(writer.apiPort, 'POST', [[1, 'room:7'], [19_999, 20_000]])).json).toEqual({ added: 2 });
    expect((await change(writer.apiPort, 'DELETE', [[3, 1], [1, 3]])).json).toEqual({ removed: 2 });
    const { last_seq: tail } = (await jsm.streams.info(STORE_STREAM)).state;
    const expected = await plainStore(graph, (store) => {
      store.addSubscriptions([[5, 'room:5'], [1, 'room:7'], [19_999, 20_000]]);
      store.removeSubscriptions([[3, 1], [1, 3]]);
    });

    const fresh = await router('fresh.db', '--history-seconds', '0');
    expect(logged(fresh.output(), 'store view loaded from a snapshot')).toMatchObject([{ seq: wrote.seq }]);
    expect(await storeStats(fresh.apiPort)).toMatchObject({ applied: tail, appliedSinceOpen: tail - wrote.seq });
    expect(contentOf(join(dir, 'fresh.db'))).toEqual(expected);

    behind = await router('behind.db', '--history-seconds', '0');
    expect(logged(behind.output(), 'store view behind the purged stream: removed, to be loaded from the snapshot')).toHaveLength(1);
    expect(logged(behind.output(), 'store view loaded from a snapshot')).toMatchObject([{ seq: wrote.seq }]);
    expect(contentOf(join(dir, 'behind.db'))).toEqual(expected);
    for (const subject of ['1', '2', '3', '20000', 'room%3A5', 'room%3A7']) expect((await api(behind.apiPort, 'GET', `/subscribers/${subject}`)).json).toEqual((await api(fresh.apiPort, 'GET', `/subscribers/${subject}`)).json);
    await until('the writer to apply the tail', async () => (await storeStats(writer.apiPort)).applied === tail);
    expect(contentOf(join(dir, 'writer.db'))).toEqual(expected);

    // The snapshot stream lost: no router on an empty data dir could start on the purged stream, and the writer writes one again by itself.
    await jsm.streams.delete(SNAPSHOT_STREAM);
    const again = await until('the writer to write a snapshot again', () => logged(writer.output(), 'wrote a store snapshot and purged the store stream up to it')[1], 30_000, 100);
    expect(again).toMatchObject({ why: 'the stream is purged, and there is no snapshot of it', seq: tail });
    const second = await router('second.db', '--history-seconds', '0');
    expect(logged(second.output(), 'store view loaded from a snapshot')).toMatchObject([{ seq: tail }]);
    expect(contentOf(join(dir, 'second.db'))).toEqual(expected);
  }, 120_000);
});

describe('two snapshot writers at once', () => {
  const s = setUp();

  test('at most one of them writes, the other fails saying why; a copy older than the newest snapshot is refused; the newest snapshot loads, and the stream holds every change after it', async () => {
    const { servers, graph, jsm } = s;
    const a = await openView(servers, join(tempDir(), 'a.db'));
    await loadThroughStream(servers, graph);
    const applied = () => a.store.stats().applied;
    await until('the view to apply the load', async () => applied() === (await jsm.streams.info(STORE_STREAM)).state.last_seq);
    const older = copyView(a.db);
    const writers = await Promise.all(['one', 'two'].map((name) => connectJetStream(servers.urls, { name, creds: servers.creds, inboxPrefix: ROUTER_INBOX, persistent: false })));
    const refusals: string[] = [];
    for (let round = 1; round <= 3; round++) {
      await a.store.addSubscriptions([[round, `room:${round}`]]);
      const copy = copyView(a.db);
      expect(copy.bytes.length).toBeGreaterThan(2 ** 20); // several chunks each
      const results = await Promise.allSettled(writers.map((nc) => publishSnapshot(nc, copy, { purge: true })));
      const written = results.filter((r) => r.status === 'fulfilled');
      expect(written.length).toBeLessThanOrEqual(1);
      for (const r of results) if (r.status === 'rejected') refusals.push(r.reason instanceof SnapshotError ? r.reason.message : `not a SnapshotError: ${String(r.reason)}`);
      if (written.length === 1) expect((await newestManifest(jsm))?.seq).toBe(applied());
    }
    for (const why of refusals) expect(why).toMatch(/^(another snapshot was being written at the same time: this one is dropped|the newest snapshot holds sequence \d+ already, and this copy \d+)$/);

    // A writer frozen with its copy, thawed after newer snapshots: refused, nothing purged.
    const newest = (await newestManifest(jsm))!;
    expect(newest).toBeDefined();
    const first = (await jsm.streams.info(STORE_STREAM)).state.first_seq;
    await expect(publishSnapshot(writers[0], older, { purge: true })).rejects.toThrow(`the newest snapshot holds sequence ${newest.seq} already, and this copy ${older.seq}`);
    expect(await newestManifest(jsm)).toEqual(newest);
    expect((await jsm.streams.info(STORE_STREAM)).state.first_seq).toBe(first);

    await a.store.addSubscriptions([[4, 'room:4']]);
    const fresh = await openView(servers, join(tempDir(), 'c1m.db'));
    expect(fresh.lines.find((l) => l.msg === 'store view loaded from a snapshot')).toMatchObject({ seq: newest.seq });
    expect(contentOf(fresh.db)).toEqual(contentOf(a.db));
    for (const nc of writers) await nc.close();
    await Promise.all([a.close(), fresh.close()]);
  }, 60_000);
});
