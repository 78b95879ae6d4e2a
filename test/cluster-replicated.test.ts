/**
 * The history and the leases on JetStream, on a real `c1m cluster --routers 2
 * --partitions 2 --replicas 3` (three clustered nats-servers, each stream on
 * all three), with a ledger of the acknowledged sends (bench/ledger.ts) and a
 * client reading throughout: sends to both partitions arrive once each, in
 * order; kill -9 of a leading router; kill -9 of one nats-server; a router
 * frozen past the lease and thawed (its publishes are refused: it exits); a
 * router started on an empty data dir rebuilds its views from the streams and
 * serves a resume of messages it never saw live.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger } from '../bench/ledger.js';
import { credsFile } from '../cluster/nats-auth.js';
import { spawnC1m } from '../cluster/supervisor.js';
import { isAlive, spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { partitionOf } from '../subsmanager/partitions.js';
import { LEASE } from '../subsmanager/sequencer.js';
import { api, partitionLeaders, received, routerStats, SseClient, stopChild, tempDir, untilStreamsKnown } from './helpers.js';
import { until } from '../bench/until.js';

let cluster: ClusterProcess;
const clients: { close(): void }[] = [];
const children: ReturnType<typeof spawnC1m>[] = [];

beforeAll(async () => {
  cluster = await spawnCluster(['--edges', '2', '--routers', '2', '--partitions', '2', '--replicas', '3', '--db', `${tempDir()}/c1m.db`]);
});

afterAll(async () => {
  clearInterval(reading);
  [...clients, ...streams].forEach((c) => c.close());
  for (const child of children) await stopChild(child);
  if (cluster) await stopChild(cluster.child);
});

const stats = (port = cluster.apiPort) => routerStats(port);
const leaders = (distinct = false) => partitionLeaders(cluster.apiPort, { distinct });
const streamsKnown = (n: number) => untilStreamsKnown(cluster.apiPort, n);
const userOf = (partition: number, from: number): number => {
  let u = from;
  while (partitionOf(u, 2) !== partition) u++;
  return u;
};

let seq = 0;
/**
 * A send as `<seq> <text>` through `port`'s API, tried again while it is refused (503: a partition changing hands, a
 * publish not acknowledged in time), each time as a new message (a new seq): one refused may still have been kept (its
 * acknowledgement lost or late), and its copy is then another message, not an acknowledged one delivered twice.
 * Returns the seq acknowledged.
 */
async function send(subject: number, text: string, port = cluster.apiPort): Promise<number> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const n = ++seq;
    const { status, json } = await api(port, 'POST', `/send/${subject}`, `${n} ${text}`).catch((err: Error) => ({ status: 0, json: { error: err.message } }));
    if (status === 200) return n;
    expect([0, 503], JSON.stringify(json)).toContain(status);
    if (Date.now() > deadline) throw new Error(`send ${n} not acknowledged within 30 s: ${JSON.stringify(json)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
const messagesOf = (client: SseClient) =>
  received(client).map((line) => {
    const [token, n] = line.split(' ');
    return { token, seq: Number(n) };
  });
/** Missed, duplicated and out of order among the acknowledged messages, over what the clients got. */
function ledgerOf(acked: number[], ...readers: SseClient[]) {
  const ledger = new Ledger<string>();
  for (const n of acked) ledger.ack(n);
  for (const client of readers)
    for (const m of messagesOf(client)) {
      if (m.token === 'lost') continue;
      const before = ledger.outOfOrder;
      ledger.receive(m.seq, m.token, 0);
      if (ledger.outOfOrder > before) console.log('OUT OF ORDER', m, readers.indexOf(client), JSON.stringify(readers.map((c) => messagesOf(c).map((x) => `${x.seq}@${x.token}`))));
    }
  return { missed: ledger.missed(), duplicated: ledger.duplicated, outOfOrder: ledger.outOfOrder };
}
const reader = userOf(0, 100);
const senders = [userOf(0, reader + 1), userOf(1, 100)];
/**
 * The reader's streams, resumed as an EventSource resumes: one that ends (its edge lost a batch while its nats-server
 * went away, say) is opened again with the last token it got, as Last-Event-ID.
 */
const streams: SseClient[] = [];
let reading: NodeJS.Timeout | undefined;
const lastTokenOf = (client: SseClient) => messagesOf(client).at(-1)?.token;
function readThroughout(): void {
  reading = setInterval(() => {
    const current = streams.at(-1)!;
    if (!current.ended) return;
    const token = streams.map(lastTokenOf).filter(Boolean).at(-1);
    streams.push(new SseClient(cluster.port, `/sse/${reader}`, token ? { 'last-event-id': token } : {}));
  }, 50);
}
const acked: number[] = [];
/** One send from each sender and the reader itself. */
const round = async (text: string, port?: number) => {
  for (const s of [...senders, reader]) acked.push(await send(s, text, port));
};
const allArrived = (what: string) =>
  until(what, () => ledgerOf(acked, ...streams).missed === 0, 20_000).catch((err: Error) => {
    const got = new Set(streams.flatMap((c) => messagesOf(c).map((m) => m.seq)));
    console.log('STREAMS', JSON.stringify(streams.map((c) => ({ status: c.status, ended: c.ended, events: c.events.length, first: c.events[0], last: c.events.at(-1) }))));
    console.log('MISSING', acked.filter((n) => !got.has(n)), streams.length, cluster.output().split('\n').filter((l) => !l.includes('"role":"nats"') && !/edge synced|asking edge|edge joined/.test(l)).slice(-60).join('\n'));
    throw err;
  });

describe('c1m cluster --routers 2 --partitions 2 --replicas 3', () => {
  it('sends to both partitions reach a reading client once each, in order; /stats shows each partition\'s stream', async () => {
    await leaders(true); // one each, once the second router took its share
    expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify(senders.map((s) => [reader, s])))).json).toEqual({ added: 2 });
    streams.push(await SseClient.open(cluster.port, reader, ''));
    readThroughout();
    await streamsKnown(1);
    for (let i = 0; i < 5; i++) await round(`first ${i}`);
    await allArrived('the first messages');
    expect(ledgerOf(acked, ...streams)).toEqual({ missed: 0, duplicated: 0, outOfOrder: 0 });
    const partitions = (await stats()).partitions!;
    expect(partitions.map((p) => p.replicas)).toEqual([3, 3]);
    expect(partitions.every((p) => p.streamLast! >= 5 && p.lag === 0)).toBe(true);
  });

  it('kill -9 of a leading router: the other takes its partition within the lease; 0 acknowledged lost, 0 duplicated', async () => {
    // Past the hold-off after the routers shared the partitions (a router takes none back for a lease period after handing one over).
    await new Promise((resolve) => setTimeout(resolve, LEASE.ms));
    const led = await leaders(true);
    const victim = led.get(1)!;
    const killedAt = Date.now();
    process.kill(victim, 'SIGKILL');
    acked.push(await send(senders[1], 'after the kill'));
    // When the survivor logged that it leads partition 1: a dead router on this host is not waited out (its pid is gone).
    const takenAt = await until(
      "partition 1's new leader to log that it leads",
      () => {
        const line = cluster
          .output()
          .split('\n')
          .filter((l) => l.includes('"msg":"leading a partition"') && l.includes('"partition":1'))
          .map((l) => JSON.parse(l) as { time: number })
          .find((l) => l.time > killedAt);
        expect(line).toBeDefined();
        return line!.time;
      },
      5000,
      50,
    );
    expect(takenAt - killedAt).toBeLessThan(LEASE.ms);
    for (let i = 0; i < 5; i++) await round(`after kill ${i}`);
    await allArrived('every message across the kill');
    expect(ledgerOf(acked, ...streams)).toEqual({ missed: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('kill -9 of one nats-server: the streams keep their quorum, sends go on, and the reader (resuming whenever its stream ends) has every acknowledged message', async () => {
    await leaders();
    process.kill(cluster.pids['nats-2'], 'SIGKILL');
    for (let i = 0; i < 5; i++) await round(`one server down ${i}`);
    await allArrived('every message with a server down');
    expect(ledgerOf(acked, ...streams)).toEqual({ missed: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('a router on an empty data dir rebuilds its views; the leaders frozen past the lease, it leads and serves a resume of what it never saw live; thawed, they cannot publish and exit', async () => {
    const before = [...acked];
    clearInterval(reading);
    const token = streams.map(lastTokenOf).filter(Boolean).at(-1)!;
    streams.forEach((c) => c.close());
    await streamsKnown(0);
    for (let i = 0; i < 3; i++) await round(`missed ${i}`);
    const missed = acked.filter((n) => !before.includes(n));
    // Both routers of the cluster lead a partition each before the new one starts.
    await leaders(true);
    // The new router: its own empty directory, the cluster's bus and credentials.
    const dir = tempDir();
    const servers = cluster.nats.split(',').filter((_, i) => isAlive(cluster.pids[`nats-${i}`])).join(',');
    const child = spawnC1m(['router', '--db', `${dir}/c1m.db`, '--nats', servers, '--nats-creds', credsFile(cluster.natsDir, 'router'), '--api-host', '127.0.0.1', '--api-port', '0', '--partitions', '2', '--replicas', '3', '--history-seconds', '120', '--log-level', 'info']);
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    // Ready once its views are rebuilt: standing by, or already leading a partition that had no leader at that moment.
    await until('the new router', () => /c1m router (standing by|listening)/.test(out), 30_000).catch((err: Error) => {
      throw new Error(`${err.message}: ${out.slice(-3000)}`);
    });
    // The leaders as of now, frozen so that none can compete with the new router: asked again here, since on a loaded
    // box a leader can lose its lease while the new router rebuilds (and exit, restarted by the supervisor), and the
    // new router may already lead a partition that had no leader.
    const frozen = [...new Set((await leaders()).values())].filter((pid) => pid !== child.pid && isAlive(pid));
    expect(frozen.length).toBeGreaterThan(0);
    frozen.forEach((pid) => process.kill(pid, 'SIGSTOP'));
    let thawed = false;
    try {
      // It takes both partitions, one per lease period, and opens its API.
      await until('the new router leading', () => /c1m router listening/.test(out), 30_000);
      const port = JSON.parse(out.split('\n').find((l) => l.includes('c1m router listening'))!).apiPort as number;
      await until('this router to lead every partition', async () => { expect((await stats(port)).partitions!.every((p) => p.leading)).toBe(true); return true; }, 30_000, 100).catch((err: Error) => {
        throw new Error(`${err.message}: ${out.split('\n').filter((l) => !/edge synced|asking edge|edge joined/.test(l)).slice(-30).join('\n')}`);
      });
      // Its store's view was rebuilt too (cluster/store-log.ts): the reader's subscriptions are there.
      expect((await api(port, 'POST', '/subscriptions', JSON.stringify(senders.map((s) => [reader, s])))).json).toEqual({ added: 0 });
      frozen.forEach((pid) => process.kill(pid, 'SIGCONT'));
      thawed = true;
      await until('the frozen routers to exit', () => { expect(frozen.filter(isAlive)).toEqual([]); return true; }, 20_000, 100);
      // Each said why: its lease was taken, or the stream refused its publish.
      const exits = () => cluster.output().split('\n').filter((l) => l.includes('"level":60') && frozen.some((pid) => l.includes(`"pid":${pid}`)));
      await until("each frozen router's exit line", () => { expect(exits()).toHaveLength(frozen.length); return true; }, 5000, 50);
      expect(out).not.toContain('"level":60');
      // The reader resumes from its token: the replay comes from the new router's rebuilt views.
      const back = await SseClient.open(cluster.port, reader, '', { 'last-event-id': token });
      clients.push(back);
      await until('the replay', () => received(back).length >= missed.length, 20_000);
      await round('live', port);
      const live = acked.slice(-3);
      await until('the live messages', () => received(back).length >= missed.length + live.length, 20_000);
      expect(ledgerOf([...missed, ...live], back)).toEqual({ missed: 0, duplicated: 0, outOfOrder: 0 });
      expect(messagesOf(back).map((m) => m.seq).slice(0, missed.length).sort((a, b) => a - b)).toEqual(missed);
    } finally {
      if (!thawed) frozen.forEach((pid) => isAlive(pid) && process.kill(pid, 'SIGCONT'));
    }
  }, 120_000);
});
