/**
 * The routers' JetStream (`--replicas`, issue 28 step 2) as `c1m cluster` starts it: three nats-servers
 * clustered on loopback, each with JetStream, joined by a route password, with the same users. A router's
 * credentials may keep a stream on all three, and it keeps taking publishes with one server killed; an
 * edge's, a backend's and no credentials reach nothing of JetStream.
 */
import { connect, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { credsFile, ROUTER_INBOX } from '../cluster/nats-auth.js';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { stopChild, tempDir } from './helpers.js';

const seedOf = (file: string) => new TextEncoder().encode(/\bSU[A-Z2-7]{56}\b/.exec(readFileSync(file, 'utf8'))![0]);

describe('c1m cluster --replicas 3: the routers own a clustered JetStream', () => {
  let cluster: ClusterProcess;
  const connections: NatsConnection[] = [];
  const as = async (role: 'router' | 'backend' | 'edge' | undefined, inboxPrefix?: string) => {
    const creds = role && credsFile(cluster.natsDir, role, role === 'edge' ? cluster.edges[0].id : undefined);
    const nc = await connect({ servers: cluster.nats.split(','), ...(creds && { authenticator: nkeyAuthenticator(seedOf(creds)) }), inboxPrefix, maxReconnectAttempts: 0 });
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

  test('three servers, one cluster: a router keeps a stream on all three, and publishes go on with one of them killed', async () => {
    expect(cluster.nats.split(',')).toHaveLength(3);
    const router = await as('router', ROUTER_INBOX);
    const jsm = await jetstreamManager(router);
    // The cluster's meta leader is elected a moment after the servers are ready.
    let info;
    for (let tries = 0; !info; tries++) {
      info = await jsm.streams.add({ name: 'C1M_TEST', subjects: ['c1m.brain.test'], num_replicas: 3 }).catch((err: Error) => {
        if (tries > 50) throw err;
        return new Promise<undefined>((resolve) => setTimeout(resolve, 200));
      });
    }
    expect([info.cluster?.leader, ...(info.cluster?.replicas ?? []).map((r) => r.name)].sort()).toEqual(['nats-0', 'nats-1', 'nats-2']);
    const js = jetstream(router);
    expect((await js.publish('c1m.brain.test', 'one', { expect: { lastSequence: 0 } })).seq).toBe(1);
    // A publish that expects another last sequence is refused: what keeps a deposed leader from numbering.
    await expect(js.publish('c1m.brain.test', 'stale', { expect: { lastSequence: 0 } })).rejects.toThrow(/wrong last sequence/);

    // One server of three gone (not the one this client is on): two still make a quorum.
    const server = router.info!.server_name;
    const victim = ['nats-0', 'nats-1', 'nats-2'].find((name) => name !== server)!;
    process.kill(cluster.pids[victim], 'SIGKILL');
    let ack;
    for (let tries = 0; !ack; tries++) {
      ack = await js.publish('c1m.brain.test', 'two', { expect: { lastSequence: 1 }, timeout: 2000 }).catch((err: Error) => {
        if (tries > 20) throw err;
        return undefined;
      });
    }
    expect(ack.seq).toBe(2);
    expect((await jsm.streams.info('C1M_TEST')).state.messages).toBe(2);
  }, 60_000);

  test.each(['edge', 'backend', undefined] as const)('%s credentials reach nothing of JetStream', async (role) => {
    if (role === undefined) {
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
