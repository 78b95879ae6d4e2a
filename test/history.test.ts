/**
 * The message history in a real SQLite store: ids in order, written at the end
 * of the turn, what a user missed (its own and its subscriptions' messages,
 * nobody else's), pruning by age and per subject told as lost, unknown ids,
 * and ids that survive a reopen.
 */
import Database from 'better-sqlite3';
import { statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';
import { openStore, type SqliteStore } from '../index.js';
import type { History } from '../subsmanager/history.js';
import { tempDir } from './helpers.js';
import { until } from '../bench/until.js';

const open: { store: SqliteStore; history: History }[] = [];
afterEach(() => {
  vi.useRealTimers();
  for (const { store, history } of open.splice(0)) {
    history.close();
    store.close();
  }
});

function withHistory(path = ':memory:', options = { seconds: 120, perSubject: 1000 }) {
  const store = openStore(path);
  const history = store.history(options);
  history.claimLease();
  open.push({ store, history });
  return { store, history };
}
const turn = () => new Promise((resolve) => setImmediate(resolve));
const texts = (replay: ReturnType<History['replay']>) => (replay.lost ? replay : replay.messages.map((m) => `${m.id - first}:${m.subject}:${m.body}`));
let first = 0;

it("replays what a user missed: its own messages and its subscriptions', in id order, nobody else's, before and after the write", async () => {
  const { store, history } = withHistory();
  store.addSubscriptions([[1, 2], [1, 3], [4, 2]]); // 1 hears 2 and 3; 4 hears 2
  first = history.append(2, Buffer.from('a'));
  history.append(5, Buffer.from('not for 1'));
  history.append(1, Buffer.from('b'));
  history.append(3, Buffer.from('c'));
  // Still pending (this turn): replayed from memory.
  expect(texts(history.replay(1, first - 1))).toEqual(['0:2:a', '2:1:b', '3:3:c']);
  await turn();
  expect(store.db.prepare('SELECT count(*) FROM history').pluck().get()).toBe(4);
  expect(texts(history.replay(1, first - 1))).toEqual(['0:2:a', '2:1:b', '3:3:c']);
  expect(texts(history.replay(1, first))).toEqual(['2:1:b', '3:3:c']);
  expect(texts(history.replay(4, first - 1))).toEqual(['0:2:a']);
  expect(texts(history.replay(1, history.lastId))).toEqual([]);
  expect(history).toMatchObject({ resumes: 5, replayed: 9, lost: 0 });
});

it('tells an id this store never gave (ahead of it, or from before its history began) as lost, never as an empty replay', async () => {
  const { history } = withHistory();
  const id = history.append(1, Buffer.from('x'));
  expect(history.replay(1, id + 1)).toEqual({ lost: true, why: 'unknown' });
  expect(history.replay(1, 17)).toEqual({ lost: true, why: 'expired' });
  expect(history.replay(1, -3)).toEqual({ lost: true, why: 'unknown' });
  expect(history.replay(1, id - 1)).toMatchObject({ lost: false, messages: [{ id }] });
  expect(history.lost).toBe(3);
});

it('prunes by age and by count per subject; a resume from before what was pruned is told lost, one after it is not', async () => {
  const { store, history } = withHistory(':memory:', { seconds: 60, perSubject: 3 });
  store.addSubscriptions([[1, 2], [1, 3]]);
  const ids = [1, 2, 3, 4, 5].map((n) => history.append(2, Buffer.from(`m${n}`)));
  first = ids[0];
  const quiet = history.append(3, Buffer.from('q'));
  await turn();
  // Subject 2 keeps its newest 3.
  expect(history.replay(1, ids[0])).toEqual({ lost: true, why: 'expired' });
  expect(history.replay(7, ids[0])).toMatchObject({ lost: false, messages: [] }); // 7 hears neither
  expect(texts(history.replay(1, ids[1]))).toEqual(['2:2:m3', '3:2:m4', '4:2:m5', '5:3:q']);
  // Age: everything older than 60 s goes.
  history.prune(Date.now() + 61_000);
  expect(store.db.prepare('SELECT count(*) FROM history').pluck().get()).toBe(0);
  expect(history.replay(1, quiet - 1)).toEqual({ lost: true, why: 'expired' });
  expect(history.replay(1, quiet)).toEqual({ lost: false, messages: [], more: false });
});

it('keeps ids and messages across a reopen of the file, and never gives an id twice', async () => {
  const path = join(tempDir(), 'history.db');
  const a = withHistory(path);
  a.store.addSubscriptions([[1, 2]]);
  first = a.history.append(2, Buffer.from('before'));
  a.history.close();
  a.store.close();
  open.pop();
  const b = withHistory(path);
  const next = b.history.append(2, Buffer.from('after'));
  expect(next).toBe(first + 1);
  expect(texts(b.history.replay(1, first - 1))).toEqual(['0:2:before', '1:2:after']);
});

it('a new store starts its ids above any id an older store gave, so they are never mistaken for its own', async () => {
  vi.useFakeTimers({ toFake: ['Date'] }); // the ids start from the clock: the next store opens 1 ms later
  const older = withHistory(join(tempDir(), 'a.db'));
  const old = older.history.append(1, Buffer.from('x'));
  vi.setSystemTime(Date.now() + 1);
  const newer = withHistory(join(tempDir(), 'b.db'));
  expect(newer.history.append(1, Buffer.from('y'))).toBeGreaterThan(old);
  expect(newer.history.replay(1, old)).toEqual({ lost: true, why: 'expired' });
});

it('lives in a file beside the store, checkpointed by its own thread: rows reach the file while the committing connection never checkpoints', async () => {
  const dir = tempDir();
  const { history } = withHistory(join(dir, 'c1m.db'));
  const file = join(dir, 'c1m.history.db');
  const before = statSync(file).size;
  for (let i = 0; i < 3000; i++) {
    history.append(1 + (i % 50), Buffer.alloc(200, 'x'));
    if (i % 100 === 99) history.flush();
  }
  history.flush();
  await until('the history file to grow by its rows', () => { expect(statSync(file).size).toBeGreaterThan(before + 500_000); return true; }, 5000, 50);
});

it('refuses a history file that is not one, and leaves the store usable', () => {
  const dir = tempDir();
  const other = new Database(join(dir, 'c1m.history.db'));
  other.exec('CREATE TABLE something (a)');
  other.close();
  const store = openStore(join(dir, 'c1m.db'));
  expect(() => store.history({ seconds: 60, perSubject: 10 })).toThrow(/c1m\.history\.db: not a c1m message history/);
  expect(store.addSubscriptions([[1, 2]])).toBe(1);
  store.close();
});

it('makes the store, its history and their logs readable by their owner only, in a directory of its own', () => {
  const dir = join(tempDir(), 'data');
  const { history } = withHistory(join(dir, 'c1m.db'));
  history.append(1, Buffer.from('a user message'));
  history.flush();
  const mode = (name: string) => (statSync(join(dir, name)).mode & 0o777).toString(8);
  expect(mode('.')).toBe('700');
  for (const file of ['c1m.db', 'c1m.db-wal', 'c1m.history.db', 'c1m.history.db-wal', 'c1m.history.db-shm']) expect(mode(file), file).toBe('600');
});

it('keeps an idempotency key with its message in one transaction, past the count per subject, and prunes it with the window', async () => {
  const path = join(tempDir(), 'c1m.db');
  const { store, history } = withHistory(path, { seconds: 60, perSubject: 2 });
  const id = history.append(2, Buffer.from('keyed'), 'order-17');
  // Numbered, not yet written: found among the turn's rows.
  expect(history.keyed(2, 'order-17')).toBe(id);
  expect([history.keyed(3, 'order-17'), history.keyed(2, 'order-18')]).toEqual([undefined, undefined]);
  history.append(2, Buffer.from('m1'));
  history.append(2, Buffer.from('m2'));
  history.flush();
  // The count per subject took the message; the key stays for the window.
  expect(store.db.prepare('SELECT count(*) FROM history WHERE id = ?').pluck().get(id)).toBe(0);
  expect(history.keyed(2, 'order-17')).toBe(id);
  // A commit that fails (the lease taken behind this holder's back) keeps neither the message nor its key.
  history.append(2, Buffer.from('refused'), 'order-19');
  store.db.prepare('UPDATE h.sequencer SET holder = ?').run('someone else');
  history.onLeaseLost = () => {};
  history.flush();
  expect(store.db.prepare('SELECT count(*) FROM history_keys WHERE key = ?').pluck().get('order-19')).toBe(0);
  history.prune(Date.now() + 30_000);
  expect(history.keyed(2, 'order-17')).toBe(id);
  history.prune(Date.now() + 61_000);
  expect(history.keyed(2, 'order-17')).toBeUndefined();
});

it('adds the keys table to a history file of layout 1, keeping its messages', () => {
  const path = join(tempDir(), 'c1m.db');
  const a = withHistory(path);
  const id = a.history.append(1, Buffer.from('before keys'));
  a.history.close();
  a.store.close();
  open.pop();
  const file = new Database(join(dirname(path), 'c1m.history.db'));
  file.exec('DROP TABLE history_keys; PRAGMA user_version = 1');
  file.close();
  const b = withHistory(path);
  expect(b.store.db.pragma('h.user_version', { simple: true })).toBe(2);
  expect(b.history.replay(1, id - 1)).toMatchObject({ lost: false, messages: [{ id }] });
  const keyed = b.history.append(1, Buffer.from('keyed'), 'k');
  b.history.flush();
  expect(b.history.keyed(1, 'k')).toBe(keyed);
});

it("answers a send only once its row is in the file: while another process holds the history's write lock, what waits for the row waits too", async () => {
  const dir = tempDir();
  const { history } = withHistory(join(dir, 'c1m.db'));
  // Another connection to the history file, as an operator's sqlite3 or a backup would be.
  const other = new Database(join(dir, 'c1m.history.db'));
  const rows = () => other.prepare('SELECT count(*) FROM history').pluck().get() as number;
  const kept: string[] = [];
  history.append(1, Buffer.from('a'));
  history.afterCommit(() => kept.push('a'));
  expect([kept, rows()]).toEqual([['a'], 1]);

  other.prepare('BEGIN IMMEDIATE').run();
  history.append(1, Buffer.from('b'));
  history.afterCommit(() => kept.push('b'));
  history.append(1, Buffer.from('c'));
  history.afterCommit(() => kept.push('c'));
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(kept).toEqual(['a']);
  other.prepare('COMMIT').run();
  await until('the held-back rows written, then their waiters run in order', () => { expect(kept).toEqual(['a', 'b', 'c']); return true; }, 2000, 10);
  expect(rows()).toBe(3);
  other.close();
});
