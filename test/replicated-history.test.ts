/**
 * The history on JetStream (cluster/replicated-history.ts) over a real
 * nats-server with JetStream: the lease's one interface on its two
 * implementations (a SQLite row, a KV key), then two routers' views of one
 * stream: the leader's messages are answered once acknowledged and reach the
 * follower's view with the same ids; a leader deposed behind its back (its
 * lease taken) has its next publish refused by the stream; a view rebuilt from
 * nothing replays what it never saw live; a stream made again is a new epoch.
 */
import Database from 'better-sqlite3';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectJetStream } from '../cluster/jetstream.js';
import { KvLease, LEASE_BUCKET } from '../cluster/kv-lease.js';
import { Brain, historyStream, historySubject, ReplicatedHistory } from '../cluster/replicated-history.js';
import { freePorts } from '../cluster/supervisor.js';
import { ROUTER_INBOX } from '../cluster/nats-auth.js';
import { spawnNatsServer } from '../loadgen/server-process.js';
import { LEASE, SequencerLease, type Lease } from '../subsmanager/sequencer.js';
import { openStore } from '../subsmanager/store.js';
import { until } from '../bench/until.js';
import { jetStreamServersFor, stopChild, tempDir } from './helpers.js';

let nats: ChildProcess;
let servers: string;
const closing: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of closing.splice(0).reverse()) await close();
});

beforeAll(async () => {
  const [port] = await freePorts('127.0.0.1', 1);
  servers = `nats://127.0.0.1:${port}`;
  nats = await spawnNatsServer('127.0.0.1', port, ['-js', '-sd', tempDir()]);
});
afterAll(async () => {
  if (nats) await stopChild(nats);
});

async function brain(partitions = 1, replicas = 1, historySeconds = 120): Promise<Brain> {
  const nc = await connectJetStream(servers, { name: 'test', persistent: false });
  closing.push(() => nc.close());
  return Brain.on(nc, { replicas, partitions, historySeconds });
}

/** A store's history file as a router's view of partition 0's stream. */
function view(path = join(tempDir(), 'c1m.db')) {
  const store = openStore(path);
  const history = store.history({ seconds: 120, perSubject: 1000, replicated: true });
  closing.push(() => {
    history.close();
    store.close();
  });
  return history;
}

async function replicated(b: Brain, path?: string) {
  const history = await ReplicatedHistory.open(b, view(path), 0);
  const lost: string[] = [];
  history.onLeaseLost = (why) => lost.push(why);
  closing.push(() => history.close());
  return { history, lost };
}

/** Resolves once every message numbered so far is acknowledged; rejects if the stream refused them. */
const committed = (history: ReplicatedHistory) => new Promise<void>((resolve, reject) => history.afterCommit(resolve, () => reject(new Error('not committed'))));

/** The lease's contract, the same for both implementations: two holders-to-be of one lease, and a way to move the newest id. */
function leaseContract(name: string, make: () => Promise<{ a: Lease; b: Lease; numbered: (id: number) => void }>) {
  describe(`the lease interface: ${name}`, () => {
    it('one holder at a time; a lapsed lease passes with a newer term and the last renewals\' settled id; the old holder hears it lost', async () => {
      const { a, b, numbered } = await make();
      const first = (await a.claim())!;
      expect(first.term).toBeGreaterThanOrEqual(Date.now() - 1000);
      expect(a.holds()).toBe(true);
      const now = Date.now();
      expect(await b.claim(now)).toBeUndefined();
      expect(await b.current(now)).toMatchObject({ holder: a.holder, term: first.term });
      numbered(10);
      expect(await a.renew()).toBe('held'); // through 10
      numbered(20);
      expect(await a.renew()).toBe('held'); // settled 10, through 20
      expect(await b.claim(Date.now())).toBeUndefined(); // renewed since: still a's
      const taken = (await b.claim(Date.now() + LEASE.ms + 10))!;
      expect(taken.term).toBeGreaterThan(first.term);
      expect(taken.settled).toBe(10);
      expect(await a.renew()).toBe('lost');
    });

    it('a release passes it at once with nothing to deliver again; a hand-over keeps the last renewals\' settled id', async () => {
      const { a, b, numbered } = await make();
      await a.claim();
      numbered(30);
      expect(await a.renew()).toBe('held');
      numbered(40);
      expect(await a.renew()).toBe('held'); // settled 30, through 40
      await a.handOver();
      expect(a.term).toBeUndefined();
      const handed = (await b.claim())!;
      expect(handed.settled).toBe(30);
      numbered(50);
      await b.release();
      const released = (await a.claim())!;
      expect(released.term).toBeGreaterThan(handed.term);
      expect(released.settled).toBe(50);
    });
  });
}

leaseContract('a row of the history file (SequencerLease)', async () => {
  const path = join(tempDir(), 'c1m.db');
  const [one, two] = [openStore(path), openStore(path)];
  const histories = [one.history({ seconds: 120, perSubject: 1000 }), two.history({ seconds: 120, perSubject: 1000 })];
  closing.push(() => {
    histories.forEach((h) => h.close());
    one.close();
    two.close();
  });
  // The SQLite lease reads the newest id from the file: rows up to it, written as a holder would.
  const db = one.db;
  const numbered = (id: number) => db.prepare('INSERT INTO h.history (id, subject, at, body) VALUES (?, 1, ?, ?)').run(id, Date.now(), Buffer.from('x'));
  return { a: histories[0].lease as SequencerLease, b: histories[1].lease as SequencerLease, numbered };
});

leaseContract('a key of a JetStream KV bucket (KvLease)', async () => {
  const b = await brain();
  const kv = await b.leases();
  const key = `test.${Math.random().toString(36).slice(2)}`;
  let newest = 0;
  return { a: new KvLease(kv, key, () => newest), b: new KvLease(kv, key, () => newest), numbered: (id) => (newest = id) };
});

describe('a partition on a JetStream stream', () => {
  it('the leader numbers epoch + sequence, answers once acknowledged, and the follower\'s view has the same messages', async () => {
    const b = await brain();
    const info = await b.stream(0);
    const [leader, follower] = [await replicated(b), await replicated(b)];
    const term = await leader.history.claimLease();
    expect(term).toBeDefined();
    expect(await follower.history.claimLease()).toBeUndefined(); // the lease is the leader's
    expect(() => follower.history.append(1, Buffer.from('no'))).toThrow(/lease/);
    const ids = ['one', 'two', 'three'].map((text) => leader.history.append(7, Buffer.from(text)));
    expect(ids[1]).toBe(ids[0] + 1);
    await committed(leader.history);
    const { state } = await b.jsm.streams.info(historyStream(0, 1));
    expect(state.last_seq - info.state.last_seq).toBe(4); // the term marker and three messages
    expect(ids[2] - state.last_seq).toBe(ids[0] - (state.last_seq - 2)); // id - sequence: one epoch for all
    // The epoch is the one the stream's configuration keeps (its description), which every replica holds alike.
    expect(ids[0] - (state.last_seq - 2)).toBe(Number(/epoch (\d+)$/.exec(info.config.description ?? '')?.[1]));
    await until('the follower to replay the rest', () => {
      expect(follower.history.replay(7, ids[0])).toMatchObject({ lost: false, messages: [{ id: ids[1] }, { id: ids[2] }] });
      return true;
    });
    const replay = follower.history.replay(7, ids[0]);
    expect(replay.lost || replay.messages.map((m) => m.body.toString())).toEqual(['two', 'three']);
    expect(follower.history.stats()).toMatchObject({ replicas: 1, lag: 0 });
  });

  it('a leader whose lease was taken behind its back has its next publish refused by the stream: nothing numbered twice', async () => {
    const b = await brain();
    const [old, next] = [await replicated(b), await replicated(b)];
    await old.history.claimLease();
    const before = old.history.append(9, Buffer.from('before'));
    await committed(old.history);
    // As if the old leader froze past the lease: its key is gone, and the next router takes the partition.
    const kv = await b.leases();
    await kv.purge((old.history.lease as unknown as { key: string }).key);
    await until('the next router\'s view to hold the message', () => next.history.view.lastId === before);
    expect(await next.history.claimLease()).toBeDefined();
    const late = old.history.append(9, Buffer.from('late'));
    await expect(committed(old.history)).rejects.toThrow('not committed');
    expect(old.lost[0]).toMatch(/wrong last sequence/);
    // Never acknowledged, so never written to the old leader's view: the id it gave `late` is the successor's marker's.
    old.history.view.flush();
    expect(old.history.view.newerThan(before).map((m) => m.body.toString())).toEqual([]);
    const taken = next.history.append(9, Buffer.from('taken'));
    await committed(next.history);
    expect(taken).toBeGreaterThan(late); // the marker took `late`'s place: the id shown for `taken` was never given before
    const replay = next.history.replay(9, before - 1);
    expect(replay.lost || replay.messages.map((m) => m.body.toString())).toEqual(['before', 'taken']);
  });

  it('a view whose file is new is rebuilt from the stream before it returns, and replays what it never saw live', async () => {
    const b = await brain();
    const { history } = await replicated(b);
    await history.claimLease();
    const first = history.append(11, Buffer.from('kept'));
    await committed(history);
    const rebuilt = await replicated(b);
    const replay = rebuilt.history.replay(11, first - 1);
    expect(replay.lost || replay.messages.map((m) => [m.id, m.body.toString()])).toEqual([[first, 'kept']]);
  });

  it('a stream of another replica count is a startup error naming both (the routers of a cluster must agree on --replicas)', async () => {
    const b = await brain(5); // a stream of its own, made with one replica
    await b.stream(0);
    const other = await brain(5, 2);
    await expect(other.stream(0)).rejects.toThrow(/C1M_HISTORY_0_OF_5 has 1 replicas .* not 2/);
  });

  it('a stream deleted and made again is a new epoch: a view of the old one is emptied, and its ids are not this stream\'s', async () => {
    const b = await brain(3); // a partition count of its own: a stream of its own
    const path = join(tempDir(), 'c1m.db');
    const store = openStore(path);
    const options = { seconds: 120, perSubject: 1000, replicated: true, partition: 0, partitions: 3 };
    const first = await ReplicatedHistory.open(b, store.history(options), 0);
    first.onLeaseLost = () => {};
    await first.claimLease();
    const old = first.append(5, Buffer.from('old'));
    await new Promise<void>((resolve) => first.afterCommit(resolve));
    await first.close();
    first.view.close();
    await b.jsm.streams.delete(historyStream(0, 3));
    await b.kvm.open(LEASE_BUCKET).then((kv) => kv.purge('history.3.0'));
    const again = await ReplicatedHistory.open(b, store.history(options), 0);
    closing.push(async () => {
      await again.close();
      again.view.close();
      store.close();
    });
    expect(again.view.newerThan(0)).toEqual([]);
    expect(again.replay(5, old)).toMatchObject({ lost: true });
  });

  it("a keyed message carries its key to the stream (Nats-Msg-Id): followers' views learn it, a new leader answers it, a retry's publish stores nothing", async () => {
    const b = await brain(7); // a partition count of its own: a stream of its own
    const [leader, follower] = [await replicated(b), await replicated(b)];
    await leader.history.claimLease();
    const id = leader.history.append(3, Buffer.from('pay 5'), 'order-17');
    expect(leader.history.keyed(3, 'order-17')).toBe(id); // numbered, not yet acknowledged
    await committed(leader.history);
    await until('the follower to know the key', () => follower.history.keyed(3, 'order-17') === id);
    expect(follower.history.keyed(4, 'order-17')).toBeUndefined(); // keys are per subject
    const { state } = await b.jsm.streams.info(historyStream(0, 7));
    const seq = state.last_seq;
    // What a retry's publish gets from the stream, even expecting a stale last sequence (nats-server checks the key first).
    for (const expect_ of [{}, { expect: { lastSequence: seq - 1 } }]) {
      const ack = await b.js.publish(historySubject(0, 7), Buffer.from('pay 5'), { msgID: '3 order-17', ...expect_ });
      expect(ack).toMatchObject({ duplicate: true, seq });
    }
    expect((await b.jsm.streams.info(historyStream(0, 7))).state.last_seq).toBe(seq);
    // The next leader's view has it: a retry there is answered with the first id.
    await leader.history.close();
    expect(await follower.history.claimLease()).toBeDefined();
    expect(follower.history.keyed(3, 'order-17')).toBe(id);
    expect((await b.jsm.streams.info(historyStream(0, 7))).config.duplicate_window).toBe(120e9);
  });

  it('a key the view forgot but the stream still holds is acknowledged as a duplicate: the leader steps down, and nothing it numbered since is kept', async () => {
    const b = await brain(8);
    const dir = tempDir();
    const { history, lost } = await replicated(b, join(dir, 'c1m.db'));
    const stepDowns: string[] = [];
    history.onStepDown = (why) => stepDowns.push(why);
    await history.claimLease();
    const first = history.append(4, Buffer.from('first'), 'k-1');
    await committed(history);
    const { state } = await b.jsm.streams.info(historyStream(0, 8));
    // As if the view's window had ended a moment before the stream's.
    const file = new Database(join(dir, 'c1m.history.db'));
    file.exec('DELETE FROM history_keys');
    file.close();
    expect(history.keyed(4, 'k-1')).toBeUndefined();
    history.append(4, Buffer.from('first again'), 'k-1');
    history.append(4, Buffer.from('numbered after it'));
    await expect(committed(history)).rejects.toThrow('not committed');
    expect(stepDowns).toEqual([expect.stringContaining('already holds 4 k-1')]);
    expect(lost).toEqual([]);
    // The stream's sequence named the first send: the view has its key again, for the backend's retry.
    expect(history.keyed(4, 'k-1')).toBe(first);
    await new Promise((resolve) => setTimeout(resolve, 200)); // the second publish's refusal, if it were stored
    expect((await b.jsm.streams.info(historyStream(0, 8))).state.last_seq).toBe(state.last_seq);
  });

  it("a stream's duplicate window is the history's window, and an existing stream's is changed to it", async () => {
    expect((await (await brain(9, 1, 60)).stream(0)).config.duplicate_window).toBe(60e9);
    const b = await brain(9, 1, 30);
    expect((await b.stream(0)).config.duplicate_window).toBe(30e9);
    expect((await b.jsm.streams.info(historyStream(0, 9))).config.duplicate_window).toBe(30e9);
  });
});

describe('three nats-servers, R3', () => {
  const servers = jetStreamServersFor(3);

  it("a retry's publish is a duplicate there too, even expecting a stale sequence; followers' views learn the key", async () => {
    const r3 = servers();
    const nc = await connectJetStream(r3.urls, { name: 'test', persistent: false, creds: r3.creds, inboxPrefix: ROUTER_INBOX });
    closing.push(() => nc.close());
    const b = await Brain.on(nc, { replicas: 3, partitions: 1, historySeconds: 120 });
    const [leader, follower] = [await replicated(b), await replicated(b)];
    await leader.history.claimLease();
    const id = leader.history.append(3, Buffer.from('pay 5'), 'order-17');
    await committed(leader.history);
    const seq = (await b.jsm.streams.info(historyStream(0, 1))).state.last_seq;
    const ack = await b.js.publish(historySubject(0, 1), Buffer.from('pay 5'), { msgID: '3 order-17', expect: { lastSequence: seq - 1 } });
    expect(ack).toMatchObject({ duplicate: true, seq });
    await until('the follower to know the key', () => follower.history.keyed(3, 'order-17') === id);
  });
});
