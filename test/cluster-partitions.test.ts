/**
 * Partitions on a real `c1m cluster --routers 2 --partitions 2` (nats-server
 * with its users, 2 edges on one port): each router leads one partition, a
 * send to any router's API reaches its subject's leader, every stream gets
 * each message once and each sender's in order, and a stream's token (its
 * last id per partition) resumes it on every transport, the native
 * EventSource way too (Last-Event-ID), across kill -9 of its edge and of a
 * router: 0 missed, 0 duplicated (bench/ledger.ts). A token that is not this
 * cluster's is told `lost unknown`. A backend on the bus that knows the
 * partitions reaches each leader without a pass.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Ledger } from '../bench/ledger.js';
import { credsFile } from '../cluster/nats-auth.js';
import { NatsBus } from '../cluster/nats-bus.js';
import type { RouterStats } from '../cluster/router-process.js';
import { BusSender } from '../cluster/sender.js';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { partitionOf } from '../subsmanager/partitions.js';
import { api, openStream, partitionLeaders, received, routerStats, SseClient, stopChild, tempDir, untilStreamsKnown, type Transport } from './helpers.js';
import { until } from '../bench/until.js';

let cluster: ClusterProcess;
const clients: { close(): void }[] = [];

beforeAll(async () => {
  cluster = await spawnCluster(['--edges', '2', '--routers', '2', '--partitions', '2', '--db', `${tempDir()}/c1m.db`]);
});

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  if (cluster) await stopChild(cluster.child);
});

const stats = (port = cluster.apiPort) => routerStats(port);
const leaders = (distinct = false) => partitionLeaders(cluster.apiPort, { distinct });
const streamsKnown = (n: number) => untilStreamsKnown(cluster.apiPort, n);

/** Users of each partition (subsmanager/partitions.ts), from `from` up. */
function usersOf(partition: number, count: number, from: number): number[] {
  const users: number[] = [];
  for (let u = from; users.length < count; u++) if (partitionOf(u, 2) === partition) users.push(u);
  return users;
}

let seq = 0;
/** A send through either router's API as `<seq> <text>`, retried while a partition changes hands (503): acknowledged once. */
async function send(subject: number, text: string): Promise<number> {
  const n = ++seq;
  for (;;) {
    const { status, json } = await api(cluster.apiPort, 'POST', `/send/${subject}`, `${n} ${text}`);
    if (status === 200) {
      expect(typeof json.id).toBe('number');
      return n;
    }
    expect(status, JSON.stringify(json)).toBe(503);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
const open = async (transport: Transport, id: number, query: string) => {
  const client = await openStream(transport, cluster.port, id, query);
  clients.push(client);
  return client;
};
/** What a client received, as [token, seq] (or lost), and the ledger of the messages acknowledged for it. */
const messagesOf = (client: Parameters<typeof received>[0]) =>
  received(client).map((line) => {
    const [token, n] = line.split(' ');
    return { token, seq: Number(n), line };
  });
function ledgerOf(acked: number[], ...clients: Parameters<typeof received>[0][]): Ledger<string> {
  const ledger = new Ledger<string>();
  for (const n of acked) ledger.ack(n);
  for (const client of clients) for (const m of messagesOf(client)) if (m.token !== 'lost') ledger.receive(m.seq, m.token, 0);
  return ledger;
}
const lastToken = (client: Parameters<typeof received>[0]) => messagesOf(client).at(-1)!.token;

describe.each(['chunked', 'sse', 'ws'] as const)('partitions over %s', (transport) => {
  const base = { chunked: 100, sse: 200, ws: 300 }[transport];
  const ids = transport === 'chunked' ? '?ids=1' : '';

  it("each message once, each sender's in order, a token of one id per partition; a resume across kill -9 of the stream's edge", async () => {
    const led = await leaders();
    expect(new Set(led.values()).size).toBe(2);
    // The reader hears itself and a sender of each partition.
    const [reader] = usersOf(0, 1, base);
    const senders = [usersOf(0, 1, reader + 1)[0], usersOf(1, 1, base)[0]];
    expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify(senders.map((s) => [reader, s])))).json).toEqual({ added: 2 });
    const first = await open(transport, reader, ids);
    await streamsKnown(1);
    const acked: number[] = [];
    const bySender = new Map<number, number[]>(senders.map((s) => [s, []]));
    for (let i = 0; i < 10; i++) {
      for (const s of [...senders, reader]) {
        const n = await send(s, `from ${s}`);
        acked.push(n);
        bySender.get(s)?.push(n);
      }
    }
    await until('every message', () => received(first).length >= acked.length, 10_000);
    const got = messagesOf(first);
    expect(got.every((m) => /^\d+-\d+$/.test(m.token)), got.map((m) => m.token).join(',')).toBe(true);
    expect(ledgerOf(acked, first)).toMatchObject({ duplicated: 0, outOfOrder: 0 });
    expect(ledgerOf(acked, first).missed()).toBe(0);
    for (const [sender, sent] of bySender) expect(got.filter((m) => sent.includes(m.seq)).map((m) => m.seq), `sender ${sender}`).toEqual(sent);

    // Kill -9 the edge holding it; the client comes back on the other, or the restarted one, with its token.
    const token = lastToken(first);
    const killed = (await stats()).edges.filter((e) => e.directoryStreams > 0);
    expect(killed.map((e) => e.directoryStreams)).toEqual([1]);
    process.kill(killed[0].pid, 'SIGKILL');
    const whileAway = [await send(senders[0], 'while away'), await send(senders[1], 'while away'), await send(reader, 'while away')];
    await until("the killed edge's new run", async () => { expect((await stats()).edges.find((e) => e.id === killed[0].id)?.pid).not.toBe(killed[0].pid); return true; }, 15_000, 100);
    await streamsKnown(0);
    // SSE the native EventSource's way: the token comes back as the Last-Event-ID header.
    const back = transport === 'sse' ? await SseClient.open(cluster.port, reader, '', { 'last-event-id': token }) : await open(transport, reader, `?lastEventId=${token}`);
    clients.push(back);
    await streamsKnown(1);
    const after = [await send(senders[1], 'after'), await send(senders[0], 'after')];
    await until('the replay and the live messages', () => received(back).length >= whileAway.length + after.length, 10_000);
    const ledger = ledgerOf([...whileAway, ...after], back);
    expect({ missed: ledger.missed(), duplicated: ledger.duplicated, outOfOrder: ledger.outOfOrder }).toEqual({ missed: 0, duplicated: 0, outOfOrder: 0 });
    expect(messagesOf(back).map((m) => m.seq)).toEqual(expect.arrayContaining([...whileAway, ...after]));
    expect(messagesOf(back)).toHaveLength(5);
    back.close();
    first.close();
    await streamsKnown(0);
  });

  it("a new stream starts from each partition's head: one that got only partition 0's messages resumes with partition 1's it missed", async () => {
    const [reader] = usersOf(0, 1, base + 70);
    const [other] = usersOf(1, 1, base + 70);
    expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify([[reader, other]]))).json).toEqual({ added: 1 });
    const first = await open(transport, reader, ids);
    await streamsKnown(1);
    const seen = await send(reader, 'of partition 0');
    await until('the first message', () => received(first).length >= 1);
    const token = lastToken(first);
    first.close();
    await streamsKnown(0);
    const missed = [await send(other, 'of partition 1, missed'), await send(reader, 'of partition 0, missed')];
    const back = await open(transport, reader, `?lastEventId=${token}`);
    await streamsKnown(1);
    await until('the replay', () => received(back).length >= 2, 10_000);
    expect(messagesOf(first).map((m) => m.seq)).toEqual([seen]);
    expect(messagesOf(back).map((m) => m.seq).sort((x, y) => x - y)).toEqual(missed);
    back.close();
    await streamsKnown(0);
  });

  it('a token that is not this cluster\'s (one id, three, not digits) starts with lost unknown, then goes on live', async () => {
    const [user] = usersOf(1, 1, base + 50);
    for (const bad of ['12', '1-2-3', 'abc-def']) {
      const client = await open(transport, user, `?lastEventId=${bad}`);
      await streamsKnown(1);
      const live = await send(user, 'live');
      await until(`lost and live after ${bad}`, () => received(client).length >= 2, 10_000);
      expect(received(client)[0]).toBe('lost unknown');
      expect(messagesOf(client)[1].seq).toBe(live);
      client.close();
      await streamsKnown(0);
    }
  });
});

it("a backend over the bus (BusSender, backend.creds) sends straight to each partition's leader once it knows the partitions: no router passes one on", async () => {
  /** Each router's count of sends passed to another (/stats, asked until both answered). */
  const passed = async () => {
    const byRouter = new Map<number, number>();
    await until(
      "both routers' counts of passed sends",
      async () => {
        const s = (await api(cluster.apiPort, 'GET', '/stats')).json as RouterStats;
        byRouter.set(s.pid, s.passed);
        expect(byRouter.size).toBe(2);
        return true;
      },
      20_000,
      20,
    );
    return [...byRouter.values()].reduce((a, b) => a + b, 0);
  };
  await leaders();
  const bus = await NatsBus.connect(cluster.nats, { name: 'test-backend', persistent: false, creds: credsFile(cluster.natsDir, 'backend') });
  try {
    const sender = new BusSender(bus);
    await sender.send(1, 'learning the partitions');
    const before = await passed();
    for (const user of [...usersOf(0, 10, 100), ...usersOf(1, 10, 100)]) expect(await sender.send(user, `direct ${user}`)).toMatchObject({ id: expect.any(Number) });
    expect(await passed()).toBe(before);
  } finally {
    await bus.close();
  }
});

it('kill -9 of one router: the other takes its partition over; restarted, it gets one back; a client reads throughout and resumes with every acknowledged message once', async () => {
  const led = await leaders();
  const [a, b] = [usersOf(0, 1, 900)[0], usersOf(1, 1, 900)[0]];
  expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify([[a, b]]))).json).toEqual({ added: 1 });
  const first = await open('sse', a, '');
  await streamsKnown(1);
  const acked = [await send(a, 'before'), await send(b, 'before')];
  await until('the first messages', () => received(first).length >= 2);
  const victim = led.get(1)!;
  process.kill(victim, 'SIGKILL');
  // Sent while partition 1 changes hands: retried on 503 until its new leader takes them.
  for (let i = 0; i < 5; i++) acked.push(await send(b, `during ${i}`), await send(a, `during ${i}`));
  // The survivor took partition 1 (the sends above were answered). The supervisor starts the killed router again, and
  // the survivor, leading more than its share, hands it one partition, while sends go on: each router leads one again,
  // and the open stream gets every message once, in order.
  await until(
    'the partitions handed back to two routers',
    async () => {
      acked.push(await send(b, 'hand-back'), await send(a, 'hand-back'));
      const now = await leaders();
      expect(new Set(now.values()).size).toBe(2);
      expect([...now.values()]).not.toContain(victim);
      return true;
    },
    60_000,
    200,
  );
  const survivor = led.get(0)!;
  await until(
    'the survivor to count the partition it handed over',
    async () => {
      const s = (await api(cluster.apiPort, 'GET', '/stats')).json as RouterStats;
      expect(s.pid).toBe(survivor);
      expect(s.handedOver).toBe(1);
      return true;
    },
    20_000,
    20,
  );
  for (let i = 0; i < 5; i++) acked.push(await send(b, `after ${i}`), await send(a, `after ${i}`));
  await until('every message on the open stream', () => received(first).length >= acked.length, 10_000);
  const token = lastToken(first);
  first.close();
  await streamsKnown(0);
  const missed = [await send(b, 'missed'), await send(a, 'missed')];
  const back = await SseClient.open(cluster.port, a, '', { 'last-event-id': token });
  clients.push(back);
  await streamsKnown(1);
  const live = await send(b, 'live');
  await until('the replay and the live message', () => received(back).length >= 3, 10_000);
  const ledger = ledgerOf([...acked, ...missed, live], first, back);
  expect({ missed: ledger.missed(), duplicated: ledger.duplicated, outOfOrder: ledger.outOfOrder }).toEqual({ missed: 0, duplicated: 0, outOfOrder: 0 });
  back.close();
});
