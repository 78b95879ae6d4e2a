/**
 * The replicated subscription store (cluster/store-log.ts) on three nats-servers clustered with JetStream
 * (R3), as `c1m nats-config --jetstream` configures them: changes go on through the loss of one server.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { STORE_STREAM } from '../cluster/store-log.js';
import { spawnNatsServer } from '../loadgen/server-process.js';
import { jetStreamServersFor, tempDir } from './helpers.js';
import { closeViews, openView } from './store-views.js';
import { until } from '../bench/until.js';

afterAll(closeViews);

describe('three nats-servers, R3', () => {
  const r3 = jetStreamServersFor(3);

  test('one server of three killed, a follower then the leader: changes go on being acknowledged and applied by every view', async () => {
    const servers = r3();
    const dir = tempDir();
    const a = await openView(servers, join(dir, 'a.db'));
    const b = await openView(servers, join(dir, 'b.db'));
    await a.store.addSubscriptions([[100, 99]]);
    const jsm = await jetstreamManager(a.nc);
    const leaderNow = async () => (await jsm.streams.info(STORE_STREAM)).cluster!.leader!;
    expect((await jsm.streams.info(STORE_STREAM)).config.num_replicas).toBe(3);
    const kill = (name: string) => servers.servers.get(name)!.child.kill('SIGKILL');
    const expected = (last: number) => Array.from({ length: last - 99 }, (_, i) => 100 + i);

    /**
     * The first change after a kill is tried again (a retry adds nothing twice) until acknowledged: the client
     * reconnects if its server was the one killed, and the others elect a new leader if it led the stream (5-25 s on
     * this shared 2-core box). Then every change is acknowledged at the first try.
     */
    const changesAfterKill = async (first: number, last: number) => {
      await until(`change ${first} acknowledged`, () => a.store.addSubscriptions([[first, 99]]).then(() => true), 30_000, 250);
      for (let user = first + 1; user <= last; user++) expect(await a.store.addSubscriptions([[user, 99]])).toBe(1);
    };

    // A follower, then back.
    const leader = await leaderNow();
    const follower = [...servers.servers.keys()].find((name) => name !== leader)!;
    kill(follower);
    await changesAfterKill(101, 110);
    await until('the changes on the second view', () => b.store.getSubscribers(99).length === 11, 20_000);
    const { port, args } = servers.servers.get(follower)!;
    servers.servers.get(follower)!.child = await spawnNatsServer('127.0.0.1', port, args);
    await until(
      'the restarted follower current again',
      async () => {
        const replicas = (await jsm.streams.info(STORE_STREAM)).cluster?.replicas ?? [];
        expect(replicas.filter((r) => r.current && !r.offline).map((r) => r.name)).toContain(follower);
        return true;
      },
      15_000,
      200,
    );

    // The leader.
    kill(leader);
    await changesAfterKill(111, 120);
    expect(a.store.getSubscribers(99)).toEqual(expected(120));
    await until('the changes on the second view', () => b.store.getSubscribers(99).length === 21, 15_000);
    expect(b.store.getSubscribers(99)).toEqual(expected(120));
    expect(await leaderNow()).not.toBe(leader);
    await Promise.all([a.close(), b.close()]);
  }, 60_000);
});
