/**
 * The history's lease (subsmanager/sequencer.ts): one process at a time
 * numbers a store's messages. First on one file with two connections, as two
 * processes would hold it; then two routers of a real cluster on one store,
 * driven to interleave: the one numbering is killed, then frozen while a batch
 * it took waits to leave, and its late batch reaches the edges after the new
 * holder's. A client reading throughout must see every acknowledged message
 * once, in id order.
 */
import Database from 'better-sqlite3';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import type { RouterStats } from '../cluster/router-process.js';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { historyPath } from '../subsmanager/history-file.js';
import { NotSequencerError, type History } from '../subsmanager/history.js';
import { LEASE } from '../subsmanager/sequencer.js';
import { openStore } from '../subsmanager/store.js';
import { api, openStream, received, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

const closing: (() => void)[] = [];
afterEach(() => closing.splice(0).forEach((close) => close()));

/** A process's view of the store at `path`: its own connection and history. */
function opener(path: string) {
  const store = openStore(path);
  const history = store.history({ seconds: 120, perSubject: 1000 });
  const lost: number[] = [];
  history.onLeaseLost = () => lost.push(Date.now());
  closing.push(() => {
    history.close();
    store.close();
  });
  return { store, history, lost };
}
const bodies = (history: History, after: number) => history.newerThan(after).map((m) => m.body.toString());
/** A moment when a lease taken now has lapsed unrenewed. */
const lapsed = () => Date.now() + LEASE.ms + 10;

describe('the lease on one file', () => {
  it('lets one process number at a time; the other cannot append, nor take it while it is renewed', () => {
    const path = join(tempDir(), 'c1m.db');
    const [a, b] = [opener(path), opener(path)];
    const first = a.history.claimLease()!.term;
    expect(first).toBeGreaterThanOrEqual(Date.now() - 1000); // a time: a wiped history still starts above any term seen
    expect(b.history.claimLease()).toBeUndefined();
    expect(() => b.history.append(1, Buffer.from('x'))).toThrow(NotSequencerError);
    const id = a.history.append(1, Buffer.from('from a'));
    a.history.flush();
    expect(b.history.lease.current()).toMatchObject({ holder: a.history.lease.holder, term: first });
    expect(a.history.lease.renew()).toBe('held');
    expect(b.history.claimLease(Date.now() + LEASE.ms - 100)).toBeUndefined(); // renewed: still a's
    expect(bodies(b.history, id - 1)).toEqual(['from a']);
  });

  it('two that both saw it free: the second claim, inside its write transaction, finds the first holder and takes nothing', () => {
    const path = join(tempDir(), 'c1m.db');
    const [a, b] = [opener(path), opener(path)];
    const first = a.history.claimLease()!.term;
    // history.claimLease() looks before it claims; the claim must check again, as both may have looked before either took it.
    expect(b.history.lease.claim()).toBeUndefined();
    expect(b.history.lease.current()).toMatchObject({ holder: a.history.lease.holder, term: first });
    expect(a.history.lease.confirmed()).toBe(true);
  });

  it('a lapsed lease goes to the next with a new term; the old holder commits nothing more, and the new one numbers after its last', () => {
    const path = join(tempDir(), 'c1m.db');
    const [a, b] = [opener(path), opener(path)];
    const first = a.history.claimLease()!.term;
    const kept = a.history.append(1, Buffer.from('committed by a'));
    a.history.flush();
    const term = b.history.claimLease(lapsed())!;
    expect(term.term).toBeGreaterThan(first);
    // a never renewed: everything it committed since it took the lease may not have left it.
    expect(bodies(b.history, term.settled)).toEqual(['committed by a']);
    // a does not know yet (its clock says the lease runs): its append is refused at the commit, and it is told.
    a.history.append(1, Buffer.from('too late'));
    a.history.flush();
    expect(a.lost).toHaveLength(1);
    expect(b.history.append(1, Buffer.from('b'))).toBe(kept + 1);
    b.history.flush();
    expect(bodies(b.history, kept - 1)).toEqual(['committed by a', 'b']);
  });

  it('a holder that renews marks what left it: the next holder delivers again only since two renewals back', () => {
    const path = join(tempDir(), 'c1m.db');
    const [a, b] = [opener(path), opener(path)];
    a.history.claimLease();
    for (const text of ['one', 'two', 'three']) {
      a.history.append(1, Buffer.from(text));
      a.history.flush();
      expect(a.history.lease.renew()).toBe('held');
    }
    a.history.append(1, Buffer.from('four'));
    a.history.flush();
    const term = b.history.claimLease(lapsed())!;
    expect(bodies(b.history, term.settled)).toEqual(['three', 'four']);
  });

  it('a holder whose event loop was held up past its renewal renews at its next append, unless another took the lease', () => {
    const path = join(tempDir(), 'c1m.db');
    const [a, b] = [opener(path), opener(path)];
    a.history.claimLease(Date.now() - LEASE.ms + 100); // as if its last renewal was 1.9 s ago: inside the margin
    expect(a.history.lease.holds()).toBe(false);
    a.history.append(1, Buffer.from('renewed at once'));
    expect(a.history.lease.holds()).toBe(true);
    a.history.flush();
    const taken = b.history.claimLease(lapsed())!.term;
    a.history.lease.until = Date.now(); // held up again, and this time b took over
    expect(() => a.history.append(1, Buffer.from('refused'))).toThrow(new RegExp(`another process \\(${b.history.lease.holder}, term ${taken}\\)`));
  });

  it('a history wiped while edges run starts a term above the ones they saw', () => {
    vi.useFakeTimers({ toFake: ['Date'] }); // terms start from the clock: the wiped history is made 1 ms later
    closing.push(() => vi.useRealTimers());
    const older = opener(join(tempDir(), 'c1m.db'));
    const seen = older.history.claimLease()!.term;
    vi.setSystemTime(Date.now() + 1);
    const wiped = opener(join(tempDir(), 'c1m.db')); // a new file: no row to count from
    expect(wiped.history.claimLease()!.term).toBeGreaterThan(seen);
  });

  it('a holder on this host whose process is gone is not waited out; a live one is', () => {
    const path = join(tempDir(), 'c1m.db');
    const a = opener(path);
    const first = a.history.claimLease()!.term;
    const file = new Database(historyPath(path));
    closing.push(() => file.close());
    const dead = spawnSync('true').pid!;
    const claimedBy = (holder: string) => file.prepare('UPDATE sequencer SET holder = ?, until = ?').run(holder, Date.now() + 60_000);
    claimedBy(`${hostname()}:${process.ppid}:x`); // alive
    const b = opener(path);
    expect(b.history.claimLease()).toBeUndefined();
    claimedBy(`${hostname()}:${dead}:x`);
    expect(b.history.claimLease()!.term).toBeGreaterThan(first);
  });

  it('a lease given back at close passes at once, with nothing to deliver again', () => {
    const path = join(tempDir(), 'c1m.db');
    const a = opener(path);
    const first = a.history.claimLease()!.term;
    a.history.append(1, Buffer.from('delivered'));
    a.history.close();
    const b = opener(path);
    const term = b.history.claimLease()!;
    expect(term.term).toBeGreaterThan(first);
    expect(b.history.newerThan(term.settled)).toEqual([]);
  });

  it('a lease handed over while running passes at once; the next holder delivers again since two renewals back (the last batches may reach an edge after its first); the first may lead again', () => {
    const path = join(tempDir(), 'c1m.db');
    const [a, b] = [opener(path), opener(path)];
    const first = a.history.claimLease()!.term;
    for (const text of ['one', 'two', 'three']) {
      a.history.append(1, Buffer.from(text));
      a.history.flush();
      expect(a.history.lease.renew()).toBe('held');
    }
    a.history.append(1, Buffer.from('four')); // not yet written: handOver writes it
    expect(a.history.handOver()).toBe(true);
    expect(() => a.history.append(1, Buffer.from('too late'))).toThrow(NotSequencerError);
    const term = b.history.claimLease()!;
    expect(term.term).toBeGreaterThan(first);
    expect(bodies(b.history, term.settled)).toEqual(['three', 'four']);
    b.history.append(1, Buffer.from('five'));
    b.history.flush();
    expect(a.lost).toEqual([]);
    // Handed back, the first leads again, after the second's messages.
    expect(b.history.handOver()).toBe(true);
    expect(a.history.claimLease()!.term).toBeGreaterThan(term.term);
    a.history.append(1, Buffer.from('six'));
    a.history.flush();
    expect(bodies(a.history, 0)).toEqual(['one', 'two', 'three', 'four', 'five', 'six']);
  });
});

describe('partitions of one store', () => {
  /** A process's view of partitions 0 and 1 of 2 on the store at `path`. */
  function partitioned(path: string) {
    const store = openStore(path);
    const histories = [0, 1].map((partition) => store.history({ seconds: 120, perSubject: 1000, partition, partitions: 2 }));
    closing.push(() => {
      histories.forEach((h) => h.close());
      store.close();
    });
    return { store, histories };
  }

  it('each partition has its file, its lease and its ids: two processes lead one each, and a replay reads only its own partition', () => {
    const path = join(tempDir(), 'c1m.db');
    // Both files made in one millisecond, so that their ids overlap: a statement reading the wrong partition's rows shows.
    const now = vi.spyOn(Date, 'now').mockReturnValue(Date.now());
    const a = partitioned(path);
    now.mockRestore();
    const b = partitioned(path);
    expect(a.histories[0].claimLease()).toBeDefined();
    expect(b.histories[0].claimLease()).toBeUndefined();
    expect(b.histories[1].claimLease()).toBeDefined();
    expect(a.histories[1].claimLease()).toBeUndefined();
    a.store.addSubscriptions([[1, 2], [1, 3]]);
    const [p0, p1] = [a.histories[0].append(2, Buffer.from('to 2')), b.histories[1].append(3, Buffer.from('to 3'))];
    a.histories[0].append(1, Buffer.from('own'));
    a.histories[0].flush();
    b.histories[1].flush();
    expect(() => a.histories[1].append(3, Buffer.from('not a'))).toThrow(NotSequencerError);
    const replayed = (history: History, after: number) => {
      const replay = history.replay(1, after);
      return replay.lost ? replay : [...replay.messages.map((m) => `${m.subject}:${m.body}`), ...(replay.more ? ['(more)'] : [])];
    };
    // B's view of partition 0 and A's of partition 1 read the rows the other committed, and only their partition's.
    expect(replayed(b.histories[0], p0 - 1)).toEqual(['2:to 2', '1:own']);
    expect(replayed(a.histories[1], p1 - 1)).toEqual(['3:to 3']);
    const rows = (partition: number) => {
      const file = new Database(historyPath(path, partition, 2), { readonly: true });
      const count = file.prepare('SELECT count(*) FROM history').pluck().get();
      file.close();
      return count;
    };
    expect([rows(0), rows(1)]).toEqual([2, 1]);
    expect(historyPath(path)).not.toBe(historyPath(path, 0, 2));
  });
});

describe('two routers on one store', () => {
  let cluster: ClusterProcess;
  afterAll(async () => {
    if (cluster) await stopChild(cluster.child);
  });

  /** The router answering the API now (the lease holder). */
  const holder = async () => ((await api(cluster.apiPort, 'GET', '/stats')).json as RouterStats).pid;

  it('hand the history over on kill -9 and on a frozen holder: every acknowledged message reaches the client once, in id order', async () => {
    // A wide batch window, so a frozen router still holds a batch it took.
    cluster = await spawnCluster(['--edges', '2', '--routers', '2', '--batch-ms', '200', '--db', `${tempDir()}/c1m.db`]);
    const user = 7;
    const client = await openStream('chunked', cluster.port, user, '?ids=1');
    closing.push(() => client.close());
    const acked: number[] = [];
    /** One send to `user`; the id when acknowledged, undefined when refused or unanswered (a router away). */
    const sendOnce = async (text: string): Promise<number | undefined> => {
      try {
        const res = await fetch(`http://127.0.0.1:${cluster.apiPort}/send/${user}`, { method: 'POST', body: text, signal: AbortSignal.timeout(1000) });
        const json = (await res.json()) as { id?: number; delivered?: number };
        if (res.status !== 200 || json.id === undefined) return undefined;
        acked.push(json.id);
        return json.id;
      } catch {
        return undefined;
      }
    };
    const ids = () => received(client).map((line) => Number(line.split(' ')[0]));
    // Sent before the router has heard of the stream, a message is acknowledged and reaches nobody: the claim below
    // ("every acknowledged message reaches the client") starts once the holder's directory holds the stream.
    await until('the router to count the stream', async () => { expect(((await api(cluster.apiPort, 'GET', '/stats')).json as RouterStats).connections).toBe(1); return true; }, 15_000, 50);
    await until('the first send acknowledged', async () => { expect(await sendOnce('hello')).toBeDefined(); return true; }, 10_000, 100);
    await until('the first message', () => ids().length === 1);

    /** Sends every 20 ms until `stop` resolves; bounded by its count. */
    let stop = false;
    const sending = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) {
        await sendOnce(`m${i}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const waitAcked = async (n: number) => {
      const start = acked.length;
      await until('more sends acknowledged', () => { expect(acked.length).toBeGreaterThanOrEqual(start + n); return true; }, 15_000, 50);
    };

    // kill -9 the holder: the other takes the lease once it lapses and answers on the same port.
    await waitAcked(10);
    const first = await holder();
    process.kill(first, 'SIGKILL');
    await until('the other router to hold the lease', async () => { expect(await holder()).not.toBe(first); return true; }, 15_000, 100);
    await waitAcked(10);

    // Freeze the holder right after a send it acknowledged: its batch waits in its window.
    const second = await holder();
    const terms = async () => ((await api(cluster.apiPort, 'GET', '/stats')).json as RouterStats).history!.term!;
    const secondTerm = await terms();
    stop = true;
    await sending;
    const frozenAck = await sendOnce('taken, then frozen');
    process.kill(second, 'SIGSTOP');
    try {
      expect(frozenAck).toBeDefined();
      // The restarted first router takes over; the kernel may still hand API connections to the frozen one, so retry.
      await until('a send acknowledged after the freeze', async () => { expect(await sendOnce('after the freeze')).toBeDefined(); return true; }, 15_000, 100);
    } finally {
      process.kill(second, 'SIGCONT');
    }
    // Thawed, it finds the lease taken and exits; its late batch is dropped by the edges.
    await until('the frozen router to exit', () => { expect(() => process.kill(second, 0)).toThrow(); return true; }, 10_000, 100);
    expect(await terms()).toBeGreaterThan(secondTerm); // /stats names the term of the holder answering
    const last = await sendOnce('last');
    expect(last).toBeDefined();
    await until('the last message', () => ids().includes(last!), 10_000);

    const got = ids();
    expect(got).toEqual([...got].sort((x, y) => x - y)); // in id order
    expect(new Set(got).size).toBe(got.length); // once each
    expect(acked.filter((id) => !got.includes(id))).toEqual([]); // nothing acknowledged missing
    const output = cluster.output();
    expect(output).toContain("another router took the history's lease: exiting");
    expect(output).toContain("delivered the previous term's last messages again");
  }, 90_000);
});
