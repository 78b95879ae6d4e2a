/**
 * What an edge does with a router's delivery batches, driven over a real
 * cluster's bus with the router's credentials (what a leaked router.creds can
 * do, per docs/security.md's threat model): a gap in a router run's batch numbers
 * ends every stream on the edge, so that each resumes from the history; a
 * batch of an older term of the history's lease is dropped. Then a lone edge
 * whose router is the test: live messages that arrive while a resuming
 * stream's replay is on its way are kept and written after it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { packChunks } from '../cluster/deliver-batch.js';
import { decode, encode, SUBJECTS, type BusMessage } from '../cluster/messages.js';
import { credsFile, readCreds, writeNatsConfig } from '../cluster/nats-auth.js';
import { NatsClient } from '../cluster/nats.js';
import { freePort } from '../cluster/supervisor.js';
import { spawnCluster, spawnEdge, spawnNatsServer, type ClusterProcess } from '../loadgen/server-process.js';
import { api, openStream, received, stopChild, tempDir, untilStreamsKnown } from './helpers.js';
import { until } from '../bench/until.js';

let cluster: ClusterProcess;
beforeAll(async () => {
  cluster = await spawnCluster(['--edges', '1', '--db', `${tempDir()}/c1m.db`]);
});
afterAll(() => stopChild(cluster?.child));
const clients: { close(): void }[] = [];
afterEach(() => clients.splice(0).forEach((c) => c.close()));

/** Batches published to the edge as a router would; resolves once nats-server has routed them (its close follows them). */
async function asRouter(...batches: Extract<BusMessage, { t: 'deliver' }>[]): Promise<void> {
  const client = await NatsClient.connect([cluster.nats], { name: 'test-router', persistent: false, user: readCreds(credsFile(cluster.natsDir, 'router')) });
  for (const batch of batches) client.publish(SUBJECTS.edge(cluster.edges[0].id), encode(batch));
  await client.close();
}

const streamsKnown = (n: number) => untilStreamsKnown(cluster.apiPort, n);

async function openWithOneMessage(user: number) {
  const client = await openStream('chunked', cluster.port, user, '?ids=1');
  clients.push(client);
  await streamsKnown(1);
  const { json } = await api(cluster.apiPort, 'POST', `/send/${user}`, 'one');
  await until('the first message', () => received(client).length === 1);
  expect(received(client)).toEqual([`${json.id} one`]);
  return { client, lastId: json.id as number };
}

it("a gap in a router run's batch numbers ends every stream on the edge, to resume from the history", async () => {
  const { client } = await openWithOneMessage(7);
  const empty = { t: 'deliver', ...packChunks([], [], [], []) } as const;
  await asRouter({ ...empty, run: 'test-run', batch: 1 }, { ...empty, run: 'test-run', batch: 3 });
  await until('the stream to end', () => client.ended, 10_000);
  await streamsKnown(0);
});

it("a batch of an older term of the history's lease is dropped: its messages reach no stream", async () => {
  await streamsKnown(0);
  const { client, lastId } = await openWithOneMessage(8);
  // Term 1 is older than any real one (a term is the time the lease was taken); its id is one no stream has seen.
  await asRouter({ t: 'deliver', ...packChunks([Buffer.from('from an older term\n')], [[8]], [Date.now()], [lastId + 1000]), run: 'test-old', batch: 1, term: 1 });
  const { json } = await api(cluster.apiPort, 'POST', '/send/8', 'after');
  await until('the message after', () => received(client).length >= 2, 10_000);
  expect(received(client)).toEqual([`${lastId} one`, `${json.id} after`]);
});

describe('a resume through an edge, its replay answered by a stand-in router', () => {
  it('live messages that reach the edge while the replay is on its way follow the replay, once each and in order', async () => {
    const dir = tempDir();
    const port = await freePort('127.0.0.1');
    const url = `nats://127.0.0.1:${port}`;
    const nats = await spawnNatsServer('127.0.0.1', port, ['-c', writeNatsConfig(dir, { listen: `127.0.0.1:${port}`, edges: ['h'] })]);
    const router = await NatsClient.connect([url], { name: 'test-router', persistent: false, user: readCreds(credsFile(dir, 'router')) });
    let edge: Awaited<ReturnType<typeof spawnEdge>> | undefined;
    try {
      edge = await spawnEdge(['--nats', url, '--nats-creds', credsFile(dir, 'edge', 'h'), '--id', 'h']);
      // The stand-in router delivers a live message to the resuming stream's holder first, then answers the
      // replay with what came before it: the edge holds the live one until the replay is written.
      router.subscribe(SUBJECTS.replay, (data, reply) => {
        const { user, after } = decode(data) as Extract<BusMessage, { t: 'replay' }>;
        void (async () => {
          const live = await NatsClient.connect([url], { name: 'test-router-live', persistent: false, user: readCreds(credsFile(dir, 'router')) });
          live.publish(SUBJECTS.edge('h'), encode({ t: 'deliver', ...packChunks([Buffer.from('live\n')], [[user]], [Date.now()], [after + 2]), run: 'stand-in', batch: 1 }));
          await live.close();
          router.publish(reply!, encode({ t: 'replayed', ids: [after + 1], bodies: [Buffer.from('missed')], more: false }));
        })();
      });
      await router.request('settle.none', new Uint8Array(0), 1000).catch(() => undefined); // the subscription is in place
      const client = await openStream('chunked', edge.port, 9, '?lastEventId=1000');
      clients.push(client);
      await until('the replay and the live message', () => received(client).length >= 2, 10_000);
      expect(received(client)).toEqual(['1001 missed', '1002 live']);
    } finally {
      await stopChild(edge?.child);
      await router.close();
      await stopChild(nats);
    }
  });
});
