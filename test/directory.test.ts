/**
 * The router's Directory on an in-process bus: the test plays the edges,
 * publishing the same messages a real edge (cluster/presence.ts) sends, and
 * reads what the directory publishes back (syncs, deliver batches).
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryBroker, type Bus } from '../cluster/bus.js';
import { packChunks } from '../cluster/deliver-batch.js';
import { Directory, type DirectoryOptions } from '../cluster/directory.js';
import { encode, SUBJECTS, whyNotBusMessage, type BusMessage, type EdgeState, type EdgeStats } from '../cluster/messages.js';
import { BusSender } from '../cluster/sender.js';
import { LatencyHistogram } from '../router/latency.js';
import { partitionOf } from '../subsmanager/partitions.js';
import { openStore } from '../subsmanager/store.js';
import type { Subject } from '../subsmanager/subjects.js';
import { until } from '../bench/until.js';
import { tempDir, unpackChunks } from './helpers.js';

type Deliver = Extract<BusMessage, { t: 'deliver' }>;

/** A deliver batch as lists, and the message as it went. */
const unpacked = (wire: Deliver) => ({ ...wire, wire, ...unpackChunks(wire) });

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Lets every message published so far, and the replies it causes, reach its subscribers (the memory bus delivers one setImmediate turn later). */
async function settle(turns = 10): Promise<void> {
  for (let i = 0; i < turns; i++) await turn();
}

/** The messages of type `t` published to `subject` so far (the broker logs every publish), in order. */
function published<T extends BusMessage['t']>(broker: MemoryBroker, subject: string, t: T): Extract<BusMessage, { t: T }>[] {
  return broker.published.filter((p) => p.subject === subject && p.message.t === t).map((p) => p.message as Extract<BusMessage, { t: T }>);
}

/** The text of each chunk of a deliver batch, without the newline every chunk ends with. */
const texts = (d: { chunks: Buffer[] }) => d.chunks.map((c) => Buffer.from(c).toString().replace(/\n$/, ''));

const edgeStats = (state: EdgeState = 'up', streams = 0): EdgeStats => ({ pid: 1, state, streams, capacity: 1000, chunks: 0, bytes: 0, slowConsumerCloses: 0, authFailures: 0, rss: 0 });

/**
 * A fake edge on a bus: it records the syncs it is sent, and publishes
 * presence batches, statuses and snapshot parts as a real edge does. `seq` is
 * the number of its last presence batch; a restart changes `boot`.
 */
class FakeEdge {
  seq = 0;
  /** Sync requests received: on c1m.sync (all edges) or c1m.edge.<id> (this one). */
  readonly syncs: { subject: string }[] = [];

  constructor(
    private readonly bus: Bus,
    readonly id: string,
    public boot = `${id}-run1`,
  ) {
    for (const subject of [SUBJECTS.edge(id), SUBJECTS.sync]) {
      bus.subscribe(subject, (message) => message.t === 'sync' && this.syncs.push({ subject }));
    }
  }

  presence(ins: Subject[], outs: Subject[] = [], seq = this.seq + 1): void {
    this.seq = seq;
    this.bus.publish(SUBJECTS.presence(this.id), { t: 'presence', boot: this.boot, seq, in: ins, out: outs });
  }

  status(state: EdgeState = 'up', seq = this.seq): void {
    this.bus.publish(SUBJECTS.presence(this.id), { t: 'status', boot: this.boot, seq, stats: edgeStats(state), latency: LatencyHistogram.merge([]) });
  }

  /** One part of a snapshot as of `seq`, on the edge's own subject. */
  statePart(part: number, last: boolean, users: Subject[], seq = this.seq): void {
    this.bus.publish(SUBJECTS.presence(this.id), { t: 'state', boot: this.boot, seq, part, last, users, stats: edgeStats('up', users.length) });
  }

  /** A whole snapshot, one part per array (one entry per stream). */
  snapshot(parts: Subject[][], seq = this.seq): void {
    parts.forEach((users, part) => this.statePart(part, part === parts.length - 1, users, seq));
  }
}
const fakeEdge = (bus: Bus, id: string) => new FakeEdge(bus, id);

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

/** A directory on a fresh memory broker, a second bus for the fake edges, and subscriptions in a Map (user → subscribers). */
function setup(options: Partial<DirectoryOptions> & { maxPayload?: number } = {}) {
  const { maxPayload, ...directoryOptions } = options;
  const broker = new MemoryBroker(maxPayload);
  const warnings: string[] = [];
  const bus = broker.connect({ warning: (m) => warnings.push(m) });
  const edgeBus = broker.connect({ warning: (m) => warnings.push(m) });
  const subscribers = new Map<Subject, number[]>();
  const directory = new Directory(bus, { getSubscribers: (user) => subscribers.get(user) ?? [] }, { maxMessage: 1024, maxUserId: 1_000_000, logger: pino({ level: 'silent' }), ...directoryOptions });
  directory.ready = true; // a router process waits for learned(); these tests drive the edges themselves
  directory.takeOver();
  cleanups.push(async () => {
    directory.close();
    await bus.close();
    await edgeBus.close();
  });
  const view = (id: string) => directory.edgeViews().find((v) => v.id === id);
  /** Which of `candidates` the directory holds (on any edge), sorted. */
  const connected = (candidates: number[]) => candidates.filter((u) => directory.registry.isConnected(u)).sort((a, b) => a - b);
  /** An edge joining as a real one does: its first status makes the directory ask it for a snapshot, which it answers. */
  async function join(id: string, users: Subject[]): Promise<FakeEdge> {
    const edge = fakeEdge(edgeBus, id);
    edge.status();
    await until(`the directory asking ${id} for its state`, () => edge.syncs.length > 0);
    edge.snapshot([users]);
    await until(`${id} synced`, () => view(id)?.synced === true);
    return edge;
  }
  const delivers = (id: string) => published(broker, SUBJECTS.edge(id), 'deliver').map(unpacked);
  return { broker, bus, edgeBus, subscribers, directory, warnings, view, connected, join, delivers };
}

describe('Directory', () => {
  it('follows presence batches after a snapshot: logins, logouts, a quick logout and login, two streams of one user', async () => {
    const { directory, edgeBus, broker, view, connected } = setup();
    const a = fakeEdge(edgeBus, 'A');

    // A router starting asks every edge at once; the edge answers on its own subject.
    directory.syncAll();
    await until('A receiving the sync', () => a.syncs.length === 1);
    expect(a.syncs[0].subject).toBe(SUBJECTS.sync);
    expect(published(broker, SUBJECTS.sync, 'sync')).toHaveLength(1);
    a.snapshot([[10]]);
    await until('A synced', () => view('A')?.synced === true);
    expect(directory.registry.isConnected(10)).toBe(true);
    expect(view('A')!.directoryStreams).toBe(1);

    // Seq 1: user 11 opens a stream, user 12 two (two tabs).
    a.presence([11, 12, 12]);
    await settle();
    expect(connected([10, 11, 12, 13])).toEqual([10, 11, 12]);
    expect(view('A')!.directoryStreams).toBe(4);
    // One registry connection per user and edge, carrying both of 12's streams.
    expect(directory.registry.connectionsOf(12)).toBe(1);
    expect(directory.send(12, 'to 12')).toBe(2);

    // Seq 2: 11 leaves; 10 leaves and comes back within the batch; 13 comes and goes within the batch; 12 closes one tab.
    a.presence([10, 13], [10, 11, 13, 12]);
    await settle();
    expect(connected([10, 11, 12, 13])).toEqual([10, 12]);
    expect(view('A')!.directoryStreams).toBe(2);
    expect(view('A')!.synced).toBe(true);
    expect(directory.send(10, 'to 10')).toBe(1);
    expect(directory.send(12, 'to 12 again')).toBe(1);
  });

  it('asks an edge for a snapshot after a gap in its presence seqs, ignores presence until it arrives, then holds exactly the snapshot', async () => {
    const { broker, view, connected, join } = setup();
    const a = await join('A', [1]);
    const allUsers = [1, 2, 3, 4, 5];

    a.presence([2]); // seq 1
    await settle();
    expect(connected(allUsers)).toEqual([1, 2]);

    // Seq 2 is lost on the way (in it, 3 came and 1 left); seq 3 arrives: a gap.
    const syncsBefore = published(broker, SUBJECTS.edge('A'), 'sync').length;
    a.presence([4], [], 3);
    await settle();
    expect(published(broker, SUBJECTS.edge('A'), 'sync')).toHaveLength(syncsBefore + 1);
    expect(a.syncs.at(-1)).toEqual({ subject: SUBJECTS.edge('A') });
    expect(view('A')!.synced).toBe(false);
    expect(connected(allUsers)).toEqual([1, 2]); // seq 3 is not applied on top of a gap

    // The missing seq 2 turns up late: the snapshot will cover it, it is not applied.
    a.presence([3], [1], 2);
    await settle();
    expect(connected(allUsers)).not.toContain(3);

    // The snapshot as of seq 3, in two parts: 1 left, 2, 3 and 4 are there.
    a.snapshot([[2, 3], [4]], 3);
    await until('A synced again', () => view('A')!.synced);
    expect(connected(allUsers)).toEqual([2, 3, 4]);
    expect(view('A')!.directoryStreams).toBe(3);

    // Presence goes on from the snapshot's seq.
    a.presence([5], [2], 4);
    await settle();
    expect(connected(allUsers)).toEqual([3, 4, 5]);
  });

  it('forgets what a restarted edge (same id, new boot) held, asks it for a snapshot and takes the new one', async () => {
    const { directory, view, connected, join } = setup();
    const a = await join('A', [1, 2]);
    a.presence([3]); // seq 1 of the first run
    await settle();
    expect(connected([1, 2, 3, 4, 5])).toEqual([1, 2, 3]);
    const syncs = a.syncs.length;

    // The process restarts: same id, new boot, its seqs start again.
    a.boot = 'A-run2';
    a.seq = 0;
    a.presence([4]); // seq 1 of the second run
    await settle();
    expect(connected([1, 2, 3, 4, 5])).toEqual([]); // the old run's users are gone, and the new run's presence waits for its snapshot
    expect(a.syncs).toHaveLength(syncs + 1);
    expect(a.syncs.at(-1)!.subject).toBe(SUBJECTS.edge('A'));
    expect(view('A')!.synced).toBe(false);
    expect(directory.send(1, 'to the old run')).toBe(0);

    a.snapshot([[4, 5]], 1);
    await until('the new run synced', () => view('A')!.synced);
    expect(connected([1, 2, 3, 4, 5])).toEqual([4, 5]);
    expect(directory.edgeViews()).toHaveLength(1);
    expect(view('A')!.directoryStreams).toBe(2);
  });

  it('drops an edge that went silent, and one that says it is stopping at once; sends no longer target them', async () => {
    // The clock and the watchdog's interval faked: 1.1 s of silence pass at once, without waiting them out.
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
    cleanups.push(() => {
      vi.useRealTimers();
    });
    const { directory, subscribers, view, connected, join, delivers } = setup({ edgeTimeoutMs: 600 });
    const a = await join('A', [1]);
    const b = await join('B', [2]);
    subscribers.set(9, [1, 2]);
    // B stays alive with a status every 100 ms, as a real edge does every second; A says nothing more.
    for (let ms = 0; ms < 1100; ms += 100) {
      b.status();
      await settle();
      vi.advanceTimersByTime(100);
    }
    await settle();
    expect(view('A')!.state).toBe('down');
    expect(view('A')!.lastSeenMs).toBeGreaterThan(600);
    expect(view('A')!.directoryStreams).toBe(0);
    expect(view('A')!.synced).toBe(false);
    expect(view('B')!.state).toBe('up');
    expect(connected([1, 2])).toEqual([2]);
    expect(directory.send(9, 'after A went silent')).toBe(1);
    await until('the deliver to B', () => delivers('B').length === 1);
    expect(delivers('A')).toEqual([]);

    // B stops: its last status says so, and it is dropped on that message, long before the 600 ms timeout.
    b.status('stopping');
    await settle();
    expect(view('B')!.state).toBe('down');
    expect(connected([1, 2])).toEqual([]);
    expect(directory.send(9, 'after B stopped')).toBe(0);
    directory.close(); // flushes anything queued
    await settle();
    expect(delivers('A')).toEqual([]);
    expect(delivers('B')).toHaveLength(1);
    expect(a.syncs.length).toBe(1); // nobody asked the dropped edge for anything
  });

  it("groups a window's sends into one deliver batch per edge, each chunk naming only that edge's users, in send order", async () => {
    const { directory, subscribers, connected, join, delivers, broker } = setup();
    await join('A', [1, 2, 2]); // 2 has two streams on A
    await join('B', [3]);
    // User 4 is on no edge.
    subscribers.set(100, [1, 3, 4]);
    subscribers.set(101, [2]);
    subscribers.set(102, [3]);
    subscribers.set(1, [2, 3, 4]);
    expect(connected([1, 2, 3, 4])).toEqual([1, 2, 3]);

    // Several sends in one turn: one window.
    const before = Date.now();
    expect(directory.send(100, 'm1')).toBe(2); // 1 on A, 3 on B (4 nowhere)
    expect(directory.send(101, 'm2')).toBe(2); // both of 2's streams
    expect(directory.send(102, 'm3')).toBe(1);
    expect(directory.send(1, 'm4')).toBe(4); // the sender 1, 2 (two streams), 3
    expect(directory.send(4, 'm5')).toBe(0);
    await until('both batches', () => delivers('A').length > 0 && delivers('B').length > 0);
    directory.close(); // would flush any batch still held back
    await settle();

    const [toA, ...moreA] = delivers('A');
    const [toB, ...moreB] = delivers('B');
    expect(moreA).toEqual([]);
    expect(moreB).toEqual([]);
    expect(texts(toA)).toEqual(['m1', 'm2', 'm4']);
    expect(toA.targets).toEqual([[1], [2], [1, 2]]);
    expect(texts(toB)).toEqual(['m1', 'm3', 'm4']);
    expect(toB.targets).toEqual([[3], [3], [3]]);
    for (const d of [toA, toB]) {
      expect(d.chunks.every((c) => Buffer.from(c).toString().endsWith('\n'))).toBe(true);
      expect(d.sentAt).toHaveLength(d.chunks.length);
      for (const t of d.sentAt) expect(Math.abs(t - before)).toBeLessThan(1000);
    }
    // Nothing for anyone else.
    expect(broker.published.filter((p) => p.message.t === 'deliver').length).toBe(2);
  });

  it("routes a topic to the edges whose streams listen to it, from their presence and snapshots, the topic first in its chunk's targets", async () => {
    const { directory, subscribers, join, delivers, view } = setup();
    const a = await join('A', [1, 'photo:1']); // 1 listens to photo:1
    await join('B', [2]);
    subscribers.set('photo:1', [1, 2]); // and both subscribe to it
    expect(view('A')!.directoryStreams).toBe(1); // a listener is no stream of its own
    expect(directory.send('photo:1', 'c1')).toBe(3); // A's listener and 1, B's 2: the edge writes 1's stream once
    a.presence([3, 'photo:1', 'match:7']); // 3 opens a stream listening to both
    await settle();
    expect(directory.send('photo:1', 'c2')).toBe(4);
    expect(directory.send('match:7', 'goal')).toBe(1);
    a.presence([], [3, 'photo:1', 'match:7']);
    await settle();
    expect(directory.send('match:7', 'nobody')).toBe(0);
    // What is not a user or a topic makes the whole message one that is not ours (dropped and counted by the bus).
    for (const bad of ['Photo:1', '7', 'user:7', 0]) expect(whyNotBusMessage({ t: 'presence', boot: 'A-run1', seq: 9, in: [bad], out: [] }), String(bad)).toBe('a presence with a missing or bad in');
    expect(whyNotBusMessage({ t: 'deliver', ...packChunks([Buffer.from('x')], [['photo:1', 2]], [0], []) })).toBeUndefined();
    directory.close();
    await settle();
    expect(delivers('A').flatMap((d) => d.targets)).toEqual([['photo:1', 1], ['photo:1', 1], ['match:7']]);
    expect(delivers('B').flatMap((d) => d.targets)).toEqual([[2], [2]]);
  });

  it('holds sends back for the batch window after a batch left, and sends them as one batch', async () => {
    const { directory, subscribers, join, delivers } = setup({ batchMs: 100 });
    await join('A', [1]);
    subscribers.set(2, [1]);

    // After a quiet spell the first send leaves at once (the end of this turn)...
    directory.send(2, 'first');
    await until('the first batch', () => delivers('A').length === 1);
    // ...the next ones, over several turns but within the window, wait for it to close and share one batch.
    directory.send(2, 'second');
    await turn();
    directory.send(2, 'third');
    await settle();
    expect(delivers('A')).toHaveLength(1);
    await until('the second batch', () => delivers('A').length === 2);
    expect(delivers('A').map(texts)).toEqual([['first'], ['second', 'third']]);
  });

  it("a send during a resync's snapshot parts goes to the previous state's users, once each; the snapshot then replaces it", async () => {
    const { directory, subscribers, view, connected, join, delivers } = setup();
    const a = await join('A', [1, 2]);
    subscribers.set(9, [1, 2, 3]);
    const all = [1, 2, 3];

    // Seq 1 is lost (3 came, 2 left); seq 2 (1 opens a second stream) shows the gap: resync.
    a.presence([1], [], 2);
    await settle();
    expect(view('A')!.synced).toBe(false);

    // The snapshot as of seq 2 arrives in two parts; a send comes between them.
    a.statePart(0, false, [1, 3], 2);
    await settle();
    // Until the last part, the directory keeps the state it had (the last synced state): not the
    // partial snapshot, and not nothing (user 1, connected all along, would miss the message).
    expect(connected(all)).toEqual([1, 2]);
    expect(directory.send(9, 'mid-snapshot')).toBe(2);
    a.statePart(1, true, [1], 2);
    await until('A synced', () => view('A')!.synced);
    expect(connected(all)).toEqual([1, 3]);
    expect(view('A')!.directoryStreams).toBe(3);
    expect(directory.registry.connectionsOf(1)).toBe(1);

    expect(directory.send(9, 'after')).toBe(3);
    await until('the second send', () => delivers('A').flatMap(texts).includes('after'));
    directory.close();
    await settle();
    const chunks = delivers('A').flatMap((d) => texts(d).map((text, i) => ({ text, targets: d.targets[i] })));
    // Each send reached each user once: no duplicate from the snapshot replacing the state under a queued batch.
    expect(chunks).toEqual([
      // 2 left during the gap: like any send between a logout and its presence batch, this one still names 2,
      // whom the edge no longer holds (it writes nothing for 2). 3, not known until the snapshot completes, misses it.
      { text: 'mid-snapshot', targets: [1, 2] },
      { text: 'after', targets: [1, 3] },
    ]);
  });

  it("a send during a new edge's first snapshot reaches none of its users; after the last part it reaches exactly the snapshot's", async () => {
    const { directory, edgeBus, subscribers, view, connected, delivers } = setup();
    const a = fakeEdge(edgeBus, 'A');
    subscribers.set(9, [1, 2, 3]);
    directory.syncAll();
    await until('A asked', () => a.syncs.length === 1);

    a.statePart(0, false, [1, 2]);
    await settle();
    expect(view('A')!.synced).toBe(false);
    expect(connected([1, 2, 3])).toEqual([]);
    expect(directory.send(9, 'mid-snapshot')).toBe(0);
    a.statePart(1, true, [2]);
    await until('A synced', () => view('A')!.synced);
    expect(connected([1, 2, 3])).toEqual([1, 2]);
    expect(view('A')!.directoryStreams).toBe(3);

    expect(directory.send(9, 'after')).toBe(3);
    await until('the batch', () => delivers('A').length > 0);
    directory.close();
    await settle();
    expect(delivers('A').map((d) => ({ texts: texts(d), targets: d.targets }))).toEqual([{ texts: ['after'], targets: [[1, 2]] }]);
  });

  it("sizes deliver batches to the bus's max payload: several batches to one edge, each within it, nothing lost, in order", async () => {
    const maxPayload = 70 * 1024;
    const maxMessage = 16 * 1024;
    const { directory, edgeBus, subscribers, view, delivers, warnings } = setup({ maxPayload, maxMessage });
    // 20,000 users with ids that take msgpack's widest encoding (5 bytes), in snapshot parts that fit the bus.
    const users = Array.from({ length: 20_000 }, (_, i) => 100_000 + i);
    const a = fakeEdge(edgeBus, 'A');
    directory.syncAll();
    await until('A asked', () => a.syncs.length === 1);
    a.snapshot([users.slice(0, 10_000), users.slice(10_000)]);
    await until('A synced', () => view('A')?.synced === true);
    expect(view('A')!.directoryStreams).toBe(20_000);

    // In one window: 24 sends of up to maxMessage bytes, each to 20 users, then one send to all 20,000, then a small one.
    const few = users.slice(0, 20);
    subscribers.set(1, few);
    subscribers.set(2, users);
    const sizes = [maxMessage, 1, 9000, maxMessage - 1];
    const sent: { text: string; targets: number[] }[] = [];
    for (let i = 0; i < 24; i++) {
      const text = `${i}|`.padEnd(sizes[i % sizes.length], 'x');
      expect(directory.send(1, text)).toBe(20);
      sent.push({ text, targets: few });
    }
    expect(directory.send(2, 'to everyone')).toBe(20_000);
    sent.push({ text: 'to everyone', targets: users });
    expect(directory.send(1, 'last')).toBe(20);
    sent.push({ text: 'last', targets: few });

    await until('the last send', () => delivers('A').some((d) => texts(d).includes('last')));
    directory.close();
    await settle();
    const batches = delivers('A');
    expect(batches.length).toBeGreaterThan(3); // 24 × ~10 KB alone is over 3 batches of 70 KB
    for (const d of batches) expect(encode(d.wire).length).toBeLessThanOrEqual(maxPayload);
    expect(warnings).toEqual([]); // the bus refused nothing

    // A send cut over two batches appears in both: join consecutive pieces of the same chunk.
    const received: { text: string; targets: number[] }[] = [];
    for (const d of batches) {
      texts(d).forEach((text, i) => {
        const last = received.at(-1);
        if (last && last.text === text) last.targets.push(...d.targets[i]);
        else received.push({ text, targets: [...d.targets[i]] });
      });
    }
    expect(received.map((r) => r.text)).toEqual(sent.map((s) => s.text));
    received.forEach((r, i) => expect(r.targets, `targets of send ${i}`).toEqual(sent[i].targets));
  });

  it('refuses sends over the bus until it has heard every edge it knows of (learned), then takes them', async () => {
    const { edgeBus, directory } = setup();
    directory.ready = false;
    const a = fakeEdge(edgeBus, 'A');
    a.status(); // an edge it has heard of, not yet synced
    await until('the edge heard of', () => directory.edgeViews().length === 1);
    expect(await edgeBus.request(SUBJECTS.send, { t: 'send', user: 1, message: 'early' })).toMatchObject({ t: 'sent', delivered: 0, error: expect.stringMatching(/still learning/) });
    const learned = directory.learned(0, 5000);
    await until('a sync asked', () => a.syncs.length > 0);
    expect(directory.ready).toBe(false); // A has not answered yet
    a.statePart(0, true, [1]);
    await learned;
    expect(directory.ready).toBe(true);
    expect(await edgeBus.request(SUBJECTS.send, { t: 'send', user: 1, message: 'now' })).toEqual({ t: 'sent', delivered: 1 });
  });

  it("refuses a send over the bus, numbering and delivering nothing, once another process holds the history's lease", async () => {
    const path = join(tempDir(), 'c1m.db');
    const [mine, theirs] = [openStore(path), openStore(path)];
    const history = mine.history({ seconds: 60, perSubject: 100 });
    const lost: number[] = [];
    history.onLeaseLost = () => lost.push(Date.now()); // a router process exits here
    const other = theirs.history({ seconds: 60, perSubject: 100 });
    cleanups.push(() => {
      for (const h of [history, other]) h.close();
      for (const s of [mine, theirs]) s.close();
    });
    const { edgeBus, directory, join: joinEdge, delivers } = setup({ histories: [history] });
    history.claimLease();
    await joinEdge('A', [1]);
    expect(await edgeBus.request(SUBJECTS.send, { t: 'send', user: 1, message: 'numbered' })).toMatchObject({ t: 'sent', delivered: 1, id: expect.any(Number) });
    const lastId = history.lastId;
    other.claimLease(Date.now() + 60_000); // as a standby would once this one's lease lapsed
    history.lease.until = 0; // this router learns it at its next send
    expect(await edgeBus.request(SUBJECTS.send, { t: 'send', user: 1, message: 'refused' })).toMatchObject({ t: 'sent', delivered: 0, error: expect.stringMatching(/another process \(.+\) numbers this store's messages: try again/) });
    expect(history.lastId).toBe(lastId);
    // A sentinel queued behind anything the refused send could have queued, and every batch sent: it arrives last.
    directory.router.redeliver(1, Buffer.from('sentinel'), lastId + 1);
    directory.close();
    await until('the sentinel delivered', () => delivers('A').flatMap(texts).includes('sentinel'));
    expect(delivers('A').flatMap(texts)).toEqual(['numbered', 'sentinel']);
  });

  /** Two routers on one store and two partitions, each leading one, and users 1 to 20 on edge A in both directories. */
  async function partitionedRouters() {
    const path = join(tempDir(), 'c1m.db');
    const broker = new MemoryBroker();
    const logger = pino({ level: 'silent' });
    const backend = broker.connect();
    const edgeBus = broker.connect();
    const routers = [0, 1].map((partition) => {
      const store = openStore(path);
      const histories = [0, 1].map((p) => store.history({ seconds: 60, perSubject: 100, partition: p, partitions: 2 }));
      const bus = broker.connect();
      const directory = new Directory(bus, store, { maxMessage: 1024, maxUserId: 1_000_000, histories, logger });
      directory.ready = true;
      const term = histories[partition].claimLease()!;
      directory.takeOver(partition, term.term);
      cleanups.push(async () => {
        directory.close();
        histories.forEach((h) => h.close());
        store.close();
        await bus.close();
      });
      return { directory, histories, term: term.term };
    });
    cleanups.push(() => Promise.all([backend.close(), edgeBus.close()]).then(() => undefined));
    // Users 1 to 20 on edge A, whichever partition each falls in.
    const users = Array.from({ length: 20 }, (_, i) => i + 1);
    const edge = fakeEdge(edgeBus, 'A');
    edge.status();
    await until('both routers asking A for its state', () => edge.syncs.length >= 2);
    edge.snapshot([users]);
    await until('A synced in both', () => routers.every((r) => r.directory.edgeViews()[0]?.synced));
    return { broker, backend, routers, users };
  }

  it('with two partitions, two routers lead one each: a send entering at either reaches its partition\'s leader, numbered there, in per-partition batches and order', async () => {
    const { broker, backend, routers, users } = await partitionedRouters();
    // Three rounds of a send to every user, over the bus, in order; `user:N` is user N's partition too.
    const answers: BusMessage[] = [];
    for (let round = 0; round < 3; round++) for (const user of users) answers.push(await backend.request(SUBJECTS.send, { t: 'send', user: round === 1 ? `user:${user}` : user, message: `${user}.${round}` }));
    expect(answers.every((a) => a.t === 'sent' && a.delivered === 1 && a.id !== undefined)).toBe(true);
    await until('every message delivered', () => published(broker, SUBJECTS.edge('A'), 'deliver').map(unpacked).reduce((n, d) => n + d.chunks.length, 0) === 60);
    const batches = published(broker, SUBJECTS.edge('A'), 'deliver').map(unpacked);
    const byUser = new Map<number, string[]>();
    for (const batch of batches) {
      const partition = batch.partition!;
      // Each batch is one partition's, in that partition's term, numbered by its leader, batch after batch.
      expect(batch.term).toBe(routers[partition].term);
      texts(batch).forEach((text, i) => {
        const user = Number(text.split('.')[0]);
        expect(partitionOf(user, 2), text).toBe(partition);
        expect(batch.ids![i]).toBeLessThanOrEqual(routers[partition].histories[partition].lastId);
        byUser.set(user, [...(byUser.get(user) ?? []), text]);
      });
    }
    for (const partition of [0, 1]) {
      const numbers = batches.filter((b) => b.partition === partition).map((b) => b.batch);
      expect(numbers).toEqual(numbers.map((_, i) => i + 1));
      const ids = batches.filter((b) => b.partition === partition).flatMap((b) => b.ids!);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
    }
    // Both partitions had users, every user got its three messages once, in the order sent.
    expect(new Set(batches.map((b) => b.partition))).toEqual(new Set([0, 1]));
    for (const user of users) expect(byUser.get(user)).toEqual([0, 1, 2].map((round) => `${user}.${round}`));
  });

  it("a backend's BusSender learns the partitions from the first answer, then sends straight to each subject's leader: nothing passed on", async () => {
    const { broker, backend, routers, users } = await partitionedRouters();
    const passed = () => routers.reduce((n, r) => n + r.directory.passed, 0);
    const sender = new BusSender(backend);
    // The first goes to any router (c1m.send), whose answer says there are 2 partitions.
    expect(await sender.send(users[0], 'first')).toMatchObject({ delivered: 1, id: expect.any(Number) });
    const before = passed();
    const published = broker.published.length;
    for (const user of users) expect(await sender.send(user, `${user}.direct`)).toMatchObject({ delivered: 1, id: expect.any(Number) });
    expect(passed()).toBe(before);
    const sends = broker.published.slice(published).filter((p) => p.message.t === 'send');
    expect(sends.map((p) => p.subject)).toEqual(users.map((user) => SUBJECTS.sendIn(partitionOf(user, 2))));
    // Each was numbered by its own partition's leader.
    expect(routers.map((r, partition) => r.histories[partition].lastId > 0)).toEqual([true, true]);
  });

  it("a send on c1m.send.<p> of another partition's subject is refused, saying which, and numbered nowhere; a sender that counted wrong sends again", async () => {
    const { backend, routers, users } = await partitionedRouters();
    const lastIds = () => routers.map((r, partition) => r.histories[partition].lastId);
    const before = lastIds();
    const user = users.find((u) => partitionOf(u, 2) === 0)!;
    expect(await backend.request(SUBJECTS.sendIn(1), { t: 'send', user, message: 'astray' })).toEqual({
      t: 'sent',
      delivered: 0,
      error: `${user} is in partition 0 of 2, not 1: send it to c1m.send.0, or to c1m.send`,
      partitions: 2,
    });
    expect(lastIds()).toEqual(before);
    // Told 3 partitions, a sender sends user u to c1m.send.<u's of 3>: where that is the other led partition, refused, then sent again where it belongs.
    const astray = users.find((u) => partitionOf(u, 3) === 1 - partitionOf(u, 2))!;
    expect(await new BusSender(backend, { partitions: 3 }).send(astray, 'counted wrong')).toMatchObject({ delivered: 1, id: expect.any(Number) });
  });

  it("a partition handed over: its batches so far leave, each edge hears how many, and its sends and replays go to the router that took it", async () => {
    const { broker, backend, routers, users } = await partitionedRouters();
    const ofOne = users.filter((u) => partitionOf(u, 2) === 1);
    for (const user of ofOne) await backend.request(SUBJECTS.sendIn(1), { t: 'send', user, message: `${user}.before` });
    await until('partition 1 delivered', () => published(broker, SUBJECTS.edge('A'), 'deliver').map(unpacked).some((d) => d.partition === 1));
    const [taker, giver] = routers;
    expect(giver.histories[1].handOver()).toBe(true);
    giver.directory.handOver(1);
    expect(giver.directory.leads(1)).toBe(false);
    const sent = published(broker, SUBJECTS.edge('A'), 'deliver').map(unpacked).filter((d) => d.partition === 1).length;
    await until("the giver's stopped", () => published(broker, SUBJECTS.edge('A'), 'stopped').length > 0);
    expect(published(broker, SUBJECTS.edge('A'), 'stopped')).toEqual([{ t: 'stopped', run: expect.any(String), batch: sent, partition: 1 }]);
    const term = taker.histories[1].claimLease()!;
    expect(term.term).toBeGreaterThan(giver.term);
    taker.directory.takeOver(1, term.term, taker.histories[1].newerThan(term.settled));
    const passed = giver.directory.passed;
    const answer = await backend.request(SUBJECTS.sendIn(1), { t: 'send', user: ofOne[0], message: 'after' });
    expect(answer).toMatchObject({ t: 'sent', delivered: 1, id: taker.histories[1].lastId });
    expect(giver.directory.passed).toBe(passed);
    const replayed = await backend.request(SUBJECTS.replayIn(1), { t: 'head' });
    expect(replayed).toMatchObject({ t: 'replayed', head: taker.histories[1].lastId });
  });

  it("refuses a maxMessage that does not fit in one message of the bus", async () => {
    const broker = new MemoryBroker(70 * 1024);
    const bus = broker.connect();
    cleanups.push(() => bus.close());
    const logger = pino({ level: 'silent' });
    const subscribers = { getSubscribers: () => [] };
    expect(() => new Directory(bus, subscribers, { maxMessage: 70 * 1024, maxUserId: 1_000_000, logger })).toThrow(
      /max message \(71680 bytes\) does not fit in one bus message: the bus \(memory\) carries at most 71680 bytes/,
    );
    expect(() => new Directory(bus, subscribers, { maxMessage: 69 * 1024, maxUserId: 1_000_000, logger })).toThrow(/does not fit/);
    // A directory that could not be built left nothing behind on the bus.
    expect(broker.subscriptions).toEqual([]);
    const fits = new Directory(bus, subscribers, { maxMessage: 16 * 1024, maxUserId: 1_000_000, logger });
    fits.close();
  });

  // The bus is at-most-once (NATS drops messages to a slow consumer): a snapshot whose middle part was lost must not be
  // applied as complete, or the lost part's users would miss every message until they reconnect.
  it('does not take a snapshot with a lost part for a complete one', async () => {
    const { edgeBus, directory, view, connected } = setup();
    const a = fakeEdge(edgeBus, 'A');
    directory.syncAll();
    await until('A asked', () => a.syncs.length === 1);
    a.statePart(0, false, [1, 2]);
    // part 1, [3, 4], is lost
    a.statePart(2, true, [5, 6]);
    await settle();
    a.status(); // statuses keep coming, with the snapshot's seq
    await settle();
    expect(connected([1, 2, 3, 4, 5, 6])).not.toEqual([1, 2, 5, 6]);
    expect(view('A')!.synced).toBe(false);
  });

  // A backend's send over the bus is held to maxMessage as the HTTP API's is, and a chunk that would take a batch over the
  // bus's max payload starts the next batch: one bad send never takes other sends' messages down with it.
  it("a send over the bus larger than maxMessage does not take other sends' messages down with it", async () => {
    const { edgeBus, directory, join, delivers, warnings } = setup({ maxPayload: 70 * 1024, maxMessage: 16 * 1024 });
    await join('A', [5]);
    const refused = edgeBus.request(SUBJECTS.send, { t: 'send', user: 5, message: 'B'.repeat(60 * 1024) }); // a backend, over the bus
    const valid = ['a', 'b', 'c'].map((c) => c.repeat(5000));
    for (const text of valid) expect(directory.send(5, text)).toBe(1);
    expect(await refused).toMatchObject({ t: 'sent', delivered: 0, error: expect.stringMatching(/over --max-message/) });
    directory.close();
    await settle();
    const got = delivers('A').flatMap(texts);
    for (const text of valid) expect(got).toContain(text);
    expect(warnings).toEqual([]);
  });
});

