import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openStore, type SqliteStore } from '../index.js';
import { SERVER_BUSY_TIMEOUT_MS } from '../server/defaults.js';
import { retryBusy } from '../subsmanager/wal.js';
import { api, runCli, spawnServer, startServer, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

const stores: SqliteStore[] = [];
const open = (path: string, cacheMiB?: number) => {
  const store = openStore(path, { cacheMiB });
  stores.push(store);
  return store;
};
afterEach(() => stores.splice(0).forEach((s) => s.close()));

/** The query plan SQLite uses for one of the store's own prepared statements, one step per line. */
const planOf = (store: SqliteStore, sql: string) =>
  (store.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(1) as { detail: string }[]).map((row) => row.detail).join('\n');

describe('subscription store', () => {
  it('opens a new file while another process holds its write lock (two routers starting at once), then keeps the short busy timeout asked for', async () => {
    const path = join(tempDir(), 'race.db');
    // Another process takes the new file's write lock for 500 ms, as a second router creating the tables would.
    const holder = spawn(process.execPath, ['-e', `
      const db = new (require('better-sqlite3'))(${JSON.stringify(path)});
      db.exec('BEGIN IMMEDIATE'); console.log('locked');
      setTimeout(() => { db.exec('COMMIT'); db.close(); }, 500);`], { cwd: process.cwd() });
    await new Promise((resolve) => holder.stdout.once('data', resolve));
    const started = Date.now();
    const store = openStore(path, { busyTimeoutMs: SERVER_BUSY_TIMEOUT_MS });
    stores.push(store);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300); // it waited for the lock, rather than failing after 50 ms
    expect(store.db.pragma('busy_timeout', { simple: true })).toBe(SERVER_BUSY_TIMEOUT_MS);
    expect(store.addSubscriptions([[2, 1]])).toBe(1);
    await new Promise((resolve) => (holder.exitCode === null ? holder.once('exit', resolve) : resolve(null)));
  });

  it('adds, ignores duplicates, removes, and answers both directions', () => {
    const store = open(':memory:');
    expect(store.addSubscriptions([[2, 1], [3, 1], [2, 1], [1, 2]])).toBe(3);
    expect(store.addSubscriptions([[2, 1]])).toBe(0);
    expect(store.getSubscribers(1)).toEqual([2, 3]);
    expect(store.getSubscriptions(2)).toEqual([1]);
    expect(store.removeSubscriptions([[2, 1], [5, 5]])).toBe(1);
    expect(store.getSubscribers(1)).toEqual([3]);
    expect(store.count()).toBe(2);
    expect(store.getSubscribers(42)).toEqual([]);
  });

  it('returns subscribers in ascending id order whatever the insert order, and creates new files with 16 KiB pages', () => {
    const store = open(join(tempDir(), 'order.db'));
    expect(store.db.pragma('page_size', { simple: true })).toBe(16384);
    expect(store.addSubscriptions([[9, 1], [3, 1], [70, 1], [5, 1], [1, 9]])).toBe(5);
    expect(store.getSubscribers(1)).toEqual([3, 5, 9, 70]);
    expect(store.getSubscribers(9)).toEqual([1]);
    expect(store.getSubscribers(2)).toEqual([]);
  });

  it('rejects a batch holding one bad pair before writing any of it', () => {
    const store = open(':memory:');
    expect(() => store.addSubscriptions([[2, 1], [0, 1]] as never)).toThrow(/pair 1/);
    expect(() => store.addSubscriptions([[2, 1], [2.5, 1]] as never)).toThrow(/pair 1/);
    expect(store.count()).toBe(0);
  });

  it('uses the primary key for getSubscribers (no table scan, no sort)', () => {
    const store = open(':memory:');
    expect(planOf(store, store.subscribers.source)).toBe('SEARCH subscriptions USING PRIMARY KEY (subscribee=?)');
  });

  it('keeps the second table in step and uses its primary key for getSubscriptions, ascending', () => {
    const store = open(':memory:');
    store.addSubscriptions([[2, 9], [2, 3], [2, 70], [5, 3]]);
    store.removeSubscriptions([[2, 70]]);
    expect(store.getSubscriptions(2)).toEqual([3, 9]);
    expect(store.db.prepare('SELECT subscriber, subscribee FROM subscriptions_by_subscriber').raw().all()).toEqual([[2, 3], [2, 9], [5, 3]]);
    expect(planOf(store, store.subscriptions.source)).toBe('SEARCH subscriptions_by_subscriber USING PRIMARY KEY (subscriber=?)');
    expect(store.db.pragma('user_version', { simple: true })).toBe(1);
  });

  it('refuses a store newer than this code, and a SQLite file that is not a c1m store, changing neither', () => {
    const dir = tempDir();
    const newer = join(dir, 'newer.db');
    const db = new Database(newer);
    db.pragma('user_version = 2');
    db.close();
    expect(() => openStore(newer)).toThrow(/newer\.db: the store has layout version 2, newer than this c1m's 1; upgrade c1m/);
    expect(() => openStore(newer, { readonly: true })).toThrow(/layout version 2, newer/);
    const other = join(dir, 'other.db');
    const foreign = new Database(other);
    foreign.exec('CREATE TABLE subscriptions (a TEXT)');
    foreign.close();
    expect(() => openStore(other)).toThrow(/other\.db: not a c1m subscription store \(no layout version 1\)/);
    const after = new Database(other);
    expect(after.prepare('SELECT count(*) FROM sqlite_master').pluck().get()).toBe(1);
    expect(after.pragma('user_version', { simple: true })).toBe(0);
    after.close();
  });

  it('refuses a corrupt file with a clear error and leaves it untouched', async () => {
    const path = join(tempDir(), 'corrupt.db');
    const garbage = 'this is not a database '.repeat(400);
    writeFileSync(path, garbage);
    expect(() => openStore(path)).toThrow(/cannot open subscription store .*corrupt\.db: file is not a database/);
    const run = await runCli(['server', '--db', path, '--port', '0', '--api-port', '0']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('file is not a database');
    expect(statSync(path).size).toBe(garbage.length);
  });

  it("sets the server connection's PRAGMAs, read back from that connection, with a busy timeout in milliseconds", async () => {
    const c1m = await startServer({ db: join(tempDir(), 'c1m.db'), cacheMiB: 3, mmapMiB: 5 });
    try {
      const pragma = (name: string) => c1m.store.db.pragma(name, { simple: true });
      expect(pragma('journal_mode')).toBe('wal');
      expect(pragma('synchronous')).toBe(1); // NORMAL
      expect(pragma('cache_size')).toBe(-3 * 1024);
      expect(pragma('mmap_size')).toBe(5 * 2 ** 20);
      expect(pragma('page_size')).toBe(16384);
      expect(pragma('busy_timeout')).toBe(SERVER_BUSY_TIMEOUT_MS);
      expect(SERVER_BUSY_TIMEOUT_MS).toBeLessThanOrEqual(100);
    } finally {
      c1m.close();
    }
  });

  it('survives a server restart', async () => {
    const db = join(tempDir(), 'c1m.db');
    let server = await spawnServer(['--db', db, '--cache-mib', '3', '--mmap-mib', '5', '--warm-cache']);
    expect(server.output()).toMatch(/"cacheMiB":3,"mmapMiB":5,"msg":"c1m listening"/);
    expect((await api(server.apiPort, 'POST', '/subscriptions', '[[2,1],[3,1]]')).json).toEqual({ added: 2 });
    await stopChild(server.child);
    server = await spawnServer(['--db', db]);
    expect((await api(server.apiPort, 'GET', '/subscribers/1')).json).toEqual([2, 3]);
    await stopChild(server.child);
  });

  it('keeps all of a batch or none of it when the writer is killed with SIGKILL mid-transaction', async () => {
    const db = join(tempDir(), 'c1m.db');
    const storeModule = join(import.meta.dirname, '..', 'dist', 'subsmanager', 'store.js');
    // A writer with a tiny page cache, so the big transaction spills pages into the WAL before it commits.
    const writer = spawn(process.execPath, [
      '--input-type=module',
      '-e',
      `
      import { openStore } from ${JSON.stringify(storeModule)};
      const store = openStore(${JSON.stringify(db)}, { cacheMiB: 1 });
      store.addSubscriptions(Array.from({ length: 1000 }, (_, i) => [i + 2, 1]));
      console.log('first batch committed');
      const big = Array.from({ length: 3_000_000 }, (_, i) => [i + 1, 2 + (i % 7)]);
      store.addSubscriptions(big);
      console.log('second batch committed');
      `,
    ]);
    let out = '';
    writer.stdout.on('data', (d) => (out += d));
    writer.stderr.on('data', (d) => (out += d));
    await until('first batch', () => out.includes('first batch committed'), 20_000);
    // Mid-write: the WAL grows with uncommitted pages of the second batch.
    await until('WAL growth', () => existsSync(`${db}-wal`) && statSync(`${db}-wal`).size > 4 * 1024 * 1024, 20_000);
    const exited = new Promise((r) => writer.once('exit', (_code, signal) => r(signal)));
    writer.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(out).not.toContain('second batch committed');

    const store = open(db);
    expect(store.db.pragma('integrity_check', { simple: true })).toBe('ok');
    expect(store.count()).toBe(1000);
    expect(store.getSubscribers(1)).toHaveLength(1000);
    expect(store.getSubscribers(2)).toEqual([]);
  });

  it('answers 503 and changes nothing when another process holds the write lock past the busy timeout', async () => {
    const db = join(tempDir(), 'c1m.db');
    const server = await spawnServer(['--db', db]);
    const other = openStore(db);
    try {
      other.db.exec('BEGIN IMMEDIATE'); // as a bulk load's copy does
      const res = await api(server.apiPort, 'POST', '/subscriptions', '[[2,1]]');
      expect(res.status).toBe(503);
      expect(res.json.error).toMatch(/store busy, nothing changed; retry: database is locked/);
      other.db.exec('ROLLBACK');
      expect((await api(server.apiPort, 'GET', '/subscribers/1')).json).toEqual([]);
      expect((await api(server.apiPort, 'POST', '/subscriptions', '[[2,1]]')).json).toEqual({ added: 1 });
    } finally {
      other.close();
      await stopChild(server.child);
    }
  });

  it('is managed from the CLI while a server uses the same file', async () => {
    const db = join(tempDir(), 'c1m.db');
    const server = await spawnServer(['--db', db]);
    expect(await runCli(['subs', 'add', '2:1', '3:1', '--db', db])).toMatchObject({ code: 0, stdout: '{"added":2}\n' });
    expect(await runCli(['subs', 'add', '4:5', '--mutual', '--db', db])).toMatchObject({ code: 0, stdout: '{"added":2}\n' });
    expect((await api(server.apiPort, 'GET', '/subscribers/1')).json).toEqual([2, 3]);
    expect(await runCli(['subs', 'remove', '2:1', '--db', db])).toMatchObject({ code: 0, stdout: '{"removed":1}\n' });
    const got = await runCli(['subs', 'get', '5', '--db', db]);
    expect(JSON.parse(got.stdout)).toEqual({ user: 5, subscribers: [4], subscriptions: [4] });
    const bad = await runCli(['subs', 'add', '2-1', '--db', db]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('is not subscriber:subject');
    await stopChild(server.child);
  });
});

describe('opening a file another process is creating', () => {
  const busy = () => Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });

  it('runs an open again while it fails with SQLITE_BUSY, and throws anything else at once', () => {
    let tries = 0;
    expect(
      retryBusy(() => {
        if (++tries < 3) throw busy();
        return 'open';
      }),
    ).toBe('open');
    expect(tries).toBe(3);
    tries = 0;
    expect(() =>
      retryBusy(() => {
        tries++;
        throw Object.assign(new Error('file is not a database'), { code: 'SQLITE_NOTADB' });
      }),
    ).toThrow('file is not a database');
    expect(tries).toBe(1);
  });

  it('two processes opening one new store with partitioned histories at once both start', async () => {
    const dir = tempDir();
    const db = join(dir, 'new.db');
    const open = `import('${new URL('../dist/subsmanager/store.js', import.meta.url).pathname}').then(({ openStore }) => { const s = openStore(process.argv[1], { busyTimeoutMs: 5000 }); for (let p = 0; p < 2; p++) s.history({ seconds: 60, perSubject: 10, partition: p, partitions: 2 }); console.log('ok'); process.exit(0); })`;
    const runs = Array.from({ length: 4 }, () =>
      new Promise<string>((resolve) => {
        const child = spawn(process.execPath, ['-e', open, db], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (out += d));
        child.on('exit', () => resolve(out.trim()));
      }),
    );
    expect(await Promise.all(runs)).toEqual(['ok', 'ok', 'ok', 'ok']);
  });
});
