/**
 * Idempotency keys on a real `c1m cluster --routers 2 --partitions 2 --replicas 1` (the history on JetStream): a key
 * sent again through either router (one leads the subject's partition, the other passes the send on over the bus,
 * key and all) answers the first id with `duplicate: true`; after a kill -9 of the partition's leader, the retry is
 * answered by the router that took the partition over, from its view of the stream, and the reader gets the message once.
 * A backend over the bus (BusSender) gives its key the same way.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { credsFile } from '../cluster/nats-auth.js';
import { NatsBus } from '../cluster/nats-bus.js';
import { BusSender } from '../cluster/sender.js';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { partitionOf } from '../subsmanager/partitions.js';
import { api, partitionLeaders, SseClient, stopChild, tempDir, untilStreamsKnown } from './helpers.js';
import { until } from '../bench/until.js';

let cluster: ClusterProcess;
const readers: SseClient[] = [];
beforeAll(async () => {
  cluster = await spawnCluster(['--edges', '1', '--routers', '2', '--partitions', '2', '--replicas', '1', '--db', `${tempDir()}/c1m.db`]);
});
afterAll(async () => {
  readers.forEach((r) => r.close());
  if (cluster) await stopChild(cluster.child);
});

const userOf = (partition: number): number => {
  let u = 100;
  while (partitionOf(u, 2) !== partition) u++;
  return u;
};
const keyed = (subject: number, body: string, key: string) => api(cluster.apiPort, 'POST', `/send/${subject}`, body, { 'idempotency-key': key });
const bodies = (reader: SseClient) => reader.messages;

it('the same key through either router answers the first id; after a kill -9 of the leader, the new leader answers it too', async () => {
  const led = await partitionLeaders(cluster.apiPort, { distinct: true });
  const users = [userOf(0), userOf(1)];
  for (const user of users) readers.push(await SseClient.open(cluster.port, user));
  await untilStreamsKnown(cluster.apiPort, 2);
  const first = await Promise.all(users.map((user) => keyed(user, `pay ${user}`, 'order-17')));
  expect(first.map((f) => f.status)).toEqual([200, 200]);
  // Each router leads one partition: of every pair of sends, one is passed to the other router over the bus.
  for (let i = 0; i < 4; i++) {
    const again = await Promise.all(users.map((user) => keyed(user, `pay ${user}`, 'order-17')));
    expect(again.map((a) => a.json)).toEqual(first.map((f) => ({ delivered: 0, id: f.json.id, duplicate: true })));
  }
  // The leader of user 0's partition dies; the retry waits for the other router to take the partition.
  process.kill(led.get(0)!, 'SIGKILL');
  const retry = await until(
    'the keyed retry to be answered',
    async () => {
      const answer = await keyed(users[0], `pay ${users[0]}`, 'order-17').catch((err: Error) => ({ status: 0, json: err.message }));
      expect(answer.status, JSON.stringify(answer.json)).toBe(200);
      return answer.json;
    },
    30_000,
    100,
  );
  expect(retry).toEqual({ delivered: 0, id: first[0].json.id, duplicate: true });
  expect((await keyed(users[0], 'after', 'order-18')).status).toBe(200);
  await until('the message after', () => { expect(bodies(readers[0]).at(-1)).toBe('after'); return true; }, 10_000, 20);
  expect(bodies(readers[0])).toEqual([`pay ${users[0]}`, 'after']);
  expect(bodies(readers[1])).toEqual([`pay ${users[1]}`]);
});

it('a backend over the bus (BusSender) sends with a key: the same key answers the first id; a bad one is refused, saying why', async () => {
  const bus = await NatsBus.connect(cluster.nats, { name: 'test-backend', persistent: false, creds: credsFile(cluster.natsDir, 'backend') });
  try {
    const sender = new BusSender(bus);
    const first = await sender.send(userOf(1), 'over the bus', 'bus-1');
    expect(first).toEqual({ delivered: expect.any(Number), id: expect.any(Number) });
    expect(await sender.send(userOf(1), 'over the bus', 'bus-1')).toEqual({ delivered: 0, id: first.id, duplicate: true });
    await expect(sender.send(userOf(1), 'bad', 'not a key')).rejects.toThrow(/bad Idempotency-Key "not a key"/);
  } finally {
    await bus.close();
  }
});
