/**
 * The routers' JetStream (`--replicas`, issue 28 step 2) as `c1m cluster` starts it: three nats-servers
 * clustered on loopback, each with JetStream, joined by a route password, with the same users. A router's
 * credentials may keep a stream on all three, and it keeps taking publishes with one server killed; an
 * edge's, a backend's and no credentials reach nothing of JetStream.
 */
import { connect, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { credsFile, ROUTER_INBOX } from '../cluster/nats-auth.js';
import { isAlive, spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { until } from '../bench/until.js';
import { runCli, stopChild, tempDir } from './helpers.js';

/** `attempt` until it resolves, every 200 ms: while the servers elect a leader. */
const retrying = <T>(what: string, attempt: () => Promise<T>) => until(what, attempt, 30_000, 200);

const seedOf = (file: string) => new TextEncoder().encode(/\bSU[A-Z2-7]{56}\b/.exec(readFileSync(file, 'utf8'))![0]);

describe('c1m cluster --replicas 3: the routers own a clustered JetStream', () => {
  let cluster: ClusterProcess;
  const connections: NatsConnection[] = [];
  const as = async (role: 'router' | 'backend' | 'edge' | undefined, inboxPrefix?: string) => {
    const creds = role && credsFile(cluster.natsDir, role, role === 'edge' ? cluster.edges[0].id : undefined);
    // The servers still running: the first test kills one (the URLs are in the servers' order, nats-0 first).
    const servers = cluster.nats.split(',').filter((_, i) => isAlive(cluster.pids[`nats-${i}`]));
    const nc = await connect({ servers, ...(creds && { authenticator: nkeyAuthenticator(seedOf(creds)) }), inboxPrefix, maxReconnectAttempts: 0 });
    connections.push(nc);
    return nc;
  };

  beforeAll(async () => {
    cluster = await spawnCluster(['--replicas', '3', '--edges', '1', '--db', ':memory:', '--state-dir', tempDir()]);
  });

  afterAll(async () => {
    await Promise.all(connections.map((nc) => nc.close().catch(() => undefined)));
    if (cluster) await stopChild(cluster.child);
  });

  test('c1m nats-config --jetstream: one brain server\'s configuration, its routes under the directory\'s route password', async () => {
    const dir = tempDir();
    const write = async (name: string, listen: string, routes: string) =>
      await runCli(['nats-config', '--dir', dir, '--listen', '127.0.0.1:4222', '--jetstream', name, '--cluster-listen', listen, '--routes', routes]);
    expect((await write('a', '127.0.0.1:6222', '127.0.0.1:6223')).code).toBe(0);
    expect((await write('b', '127.0.0.1:6223', '127.0.0.1:6222')).code).toBe(0);
    const config = (name: string) => JSON.parse(readFileSync(join(dir, `${name}.conf`), 'utf8').replace(/^#.*\n/, ''));
    const [a, b] = [config('a'), config('b')];
    expect(a.server_name).toBe('a');
    expect(a.jetstream.store_dir).toBe(join(dir, 'jetstream-a'));
    const secret = a.cluster.authorization.password;
    expect(secret.length).toBeGreaterThanOrEqual(32);
    expect(b.cluster.authorization.password).toBe(secret);
    expect(a.cluster.routes).toEqual([`nats-route://route:${secret}@127.0.0.1:6223`]);
    expect(statSync(join(dir, 'a.conf')).mode & 0o077).toBe(0);
    const refused = await runCli(['nats-config', '--dir', dir, '--routes', '127.0.0.1:6223']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('--routes are for a --jetstream server');
    // The name becomes a file name and the server's name in its cluster: a path or a space in it is refused.
    for (const name of ['../a', 'a b']) {
      const bad = await runCli(['nats-config', '--dir', dir, '--jetstream', name]);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain(`server name '${name}': use 1-64 letters, digits, '-' or '_'`);
    }
  });

  test('three servers, one cluster: a router keeps a stream on all three, and publishes go on with one of them killed', async () => {
    expect(cluster.nats.split(',')).toHaveLength(3);
    const router = await as('router', ROUTER_INBOX);
    const jsm = await jetstreamManager(router);
    // The cluster's meta leader is elected a moment after the servers are ready, a new stream's leader a moment after it is made.
    const info = await retrying('the stream made', () => jsm.streams.add({ name: 'C1M_TEST', subjects: ['c1m.brain.test'], num_replicas: 3 }));
    expect([info.cluster?.leader, ...(info.cluster?.replicas ?? []).map((r) => r.name)].sort()).toEqual(['nats-0', 'nats-1', 'nats-2']);
    const js = jetstream(router);
    expect((await retrying('the first publish acknowledged', () => js.publish('c1m.brain.test', 'one', { expect: { lastSequence: 0 }, timeout: 2000 }))).seq).toBe(1);
    // A publish that expects another last sequence is refused: what keeps a deposed leader from numbering.
    await expect(js.publish('c1m.brain.test', 'stale', { expect: { lastSequence: 0 } })).rejects.toThrow(/wrong last sequence/);

    // One server of three gone (not the one this client is on): two still make a quorum.
    const server = router.info!.server_name;
    const victim = ['nats-0', 'nats-1', 'nats-2'].find((name) => name !== server)!;
    process.kill(cluster.pids[victim], 'SIGKILL');
    const ack = await retrying('a publish acknowledged with a server gone', () => js.publish('c1m.brain.test', 'two', { expect: { lastSequence: 1 }, timeout: 2000 }));
    expect(ack.seq).toBe(2);
    expect((await jsm.streams.info('C1M_TEST')).state.messages).toBe(2);
  }, 60_000);

  test.each(['edge', 'backend', 'no'] as const)('%s credentials reach nothing of JetStream', async (role) => {
    if (role === 'no') {
      await expect(as(undefined)).rejects.toThrow(/Authorization Violation/i);
      return;
    }
    const nc = await as(role, role === 'edge' ? `_INBOX_EDGE.${cluster.edges[0].id}` : undefined);
    const refused = new Promise<string>((resolve) => {
      void (async () => {
        for await (const status of nc.status()) if (status.type === 'error') resolve(String(status.error));
      })();
    });
    // The request itself may fail or time out: what counts is what the server says of it.
    await jetstreamManager(nc, { timeout: 1000 }).catch(() => undefined);
    expect(await refused).toMatch(/Permissions Violation for Publish to "\$JS\.API\.INFO"/);
  }, 30_000);
});
