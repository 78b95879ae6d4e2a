import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { barabasiAlbertEdgeCount, generateBarabasiAlbert, writeEdgeList, type EdgeList } from '../subsmanager/graph.js';
import { bulkLoad, bulkLoadFile, EdgeListError } from '../subsmanager/bulkload.js';
import { graphStats } from '../subsmanager/stats.js';
import { openStore, TABLES } from '../subsmanager/store.js';
import { c1mArgv } from '../cluster/supervisor.js';

const dir = mkdtempSync(join(tmpdir(), 'c1m-friends-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let dbCount = 0;
const freshDbPath = (): string => join(dir, `store-${++dbCount}.db`);

function edgePairs(graph: EdgeList): [number, number][] {
  const pairs: [number, number][] = [];
  for (let i = 0; i < graph.endpoints.length; i += 2) pairs.push([graph.endpoints[i], graph.endpoints[i + 1]]);
  return pairs;
}

async function edgeListText(graph: EdgeList): Promise<string> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (chunk: Buffer) => chunks.push(chunk));
  await writeEdgeList(graph, out);
  return Buffer.concat(chunks).toString('utf8');
}

describe('Barabási–Albert generator', () => {
  it('has the model edge count: a clique on m+1 users, then m edges per user', () => {
    for (const [users, m] of [[10, 1], [50, 3], [1000, 15]]) {
      const graph = generateBarabasiAlbert({ users, m, seed: 1 });
      expect(graph.endpoints.length / 2).toBe(barabasiAlbertEdgeCount(users, m));
      expect(graph.endpoints.length / 2).toBe((m * (m + 1)) / 2 + (users - m - 1) * m);
    }
  });

  it('uses ids 1..N with no self loops and no duplicate edges', () => {
    const users = 5000;
    const graph = generateBarabasiAlbert({ users, m: 4, seed: 42 });
    const seen = new Set<string>();
    const ids = new Set<number>();
    for (const [a, b] of edgePairs(graph)) {
      expect(a).not.toBe(b);
      const key = a < b ? `${a} ${b}` : `${b} ${a}`;
      expect(seen.has(key)).toBe(false);
      seen.add(key);
      ids.add(a).add(b);
    }
    expect(Math.min(...ids)).toBe(1);
    expect(Math.max(...ids)).toBe(users);
    expect(ids.size).toBe(users);
  });

  it('is deterministic for a seed and differs across seeds', async () => {
    const once = await edgeListText(generateBarabasiAlbert({ users: 3000, m: 3, seed: 7 }));
    const again = await edgeListText(generateBarabasiAlbert({ users: 3000, m: 3, seed: 7 }));
    const other = await edgeListText(generateBarabasiAlbert({ users: 3000, m: 3, seed: 8 }));
    expect(again).toBe(once);
    expect(other).not.toBe(once);
    expect(once.split('\n', 2)[0]).toMatch(/^\d+ \d+$/);
  });

  it('has a heavy tail: the largest hub is far above the mean degree', () => {
    const users = 20_000;
    const graph = generateBarabasiAlbert({ users, m: 3, seed: 3 });
    const degree = new Uint32Array(users + 1);
    for (const id of graph.endpoints) degree[id]++;
    const mean = graph.endpoints.length / users;
    expect(Math.max(...degree)).toBeGreaterThan(20 * mean);
  });

  it('rejects impossible sizes', () => {
    expect(() => generateBarabasiAlbert({ users: 3, m: 3, seed: 1 })).toThrow(/users must be/);
    expect(() => generateBarabasiAlbert({ users: 10, m: 0, seed: 1 })).toThrow(/m must be/);
  });
});

describe('bulk loader', () => {
  const load = (path: string, text: string, direction?: 'mutual' | 'one-way') => {
    const store = openStore(path);
    return bulkLoad(store, Readable.from([Buffer.from(text)]), 'edges.txt', { direction }).finally(() => store.close());
  };
  /** The stored pairs; also checks that both tables hold the same ones. */
  const rows = (path: string): [number, number][] => {
    const store = openStore(path);
    try {
      const pairs = store.db.prepare('SELECT subscriber, subscribee FROM subscriptions ORDER BY subscriber, subscribee').raw().all() as [number, number][];
      expect(store.db.prepare('SELECT subscriber, subscribee FROM subscriptions_by_subscriber').raw().all()).toEqual(pairs);
      return pairs;
    } finally {
      store.close();
    }
  };

  it('mutual: `A B` subscribes A to B and B to A', async () => {
    const path = freshDbPath();
    const report = await load(path, '1 2\n\n2 3\n', 'mutual');
    expect(report).toMatchObject({ edges: 2, rowsRead: 4, rowsAdded: 4 });
    expect(rows(path)).toEqual([[1, 2], [2, 1], [2, 3], [3, 2]]);
    const store = openStore(path);
    expect(store.getSubscribers(2).sort()).toEqual([1, 3]);
    expect(store.getSubscriptions(2).sort()).toEqual([1, 3]);
    store.close();
  });

  it('one-way: `A B` means A subscribes to B', async () => {
    const path = freshDbPath();
    const report = await load(path, '1 2\r\n3 2\r\n', 'one-way');
    expect(report).toMatchObject({ edges: 2, rowsRead: 2, rowsAdded: 2 });
    const store = openStore(path);
    expect(store.getSubscribers(2).sort()).toEqual([1, 3]);
    expect(store.getSubscribers(1)).toEqual([]);
    expect(store.getSubscriptions(1)).toEqual([2]);
    store.close();
  });

  it('rejects a bad line naming file, line and content, and commits nothing', async () => {
    const path = freshDbPath();
    await load(path, '7 8\n');
    for (const [text, line, content] of [
      ['1 2\n3 4\n5 x\n6 7\n', 3, '5 x'],
      ['1 2\n0 4\n', 2, '0 4'],
      ['1 2\n3\n', 2, '3'],
      ['1 2\n3 4 5\n', 2, '3 4 5'],
      ['1 2\n-3 4\n', 2, '-3 4'],
      ['1 2\n3 4.5', 2, '3 4.5'],
    ] as const) {
      const error = await load(path, text).catch((err: unknown) => err);
      expect(error).toBeInstanceOf(EdgeListError);
      expect(error).toMatchObject({ source: 'edges.txt', line, content });
      expect((error as Error).message).toContain(`edges.txt:${line}:`);
    }
    expect(rows(path)).toEqual([[7, 8], [8, 7]]);
  });

  it('names the file for a bad line in a file, and keeps a non-empty store and its index intact', async () => {
    const path = freshDbPath();
    await load(path, '1 2\n');
    const file = join(dir, 'bad.edges');
    writeFileSync(file, '3 4\nfoo bar\n');
    const store = openStore(path);
    await expect(bulkLoadFile(store, file)).rejects.toThrow(`${file}:2: expected two positive integers, got "foo bar"`);
    expect(store.count()).toBe(2);
    expect(store.getSubscriptions(1)).toEqual([2]);
    store.close();
  });

  it('loading the same file twice changes nothing the second time', async () => {
    const path = freshDbPath();
    const text = await edgeListText(generateBarabasiAlbert({ users: 2000, m: 3, seed: 5 }));
    const first = await load(path, text);
    const before = rows(path);
    const second = await load(path, text);
    expect(first.rowsAdded).toBe(first.rowsRead);
    expect(second.rowsAdded).toBe(0);
    expect(rows(path)).toEqual(before);
  });

  it('loads sparse huge ids as read, and duplicates in the input once', async () => {
    const path = freshDbPath();
    const big = Number.MAX_SAFE_INTEGER;
    const report = await load(path, `${big} 1\n1 ${big}\n5 1\n`);
    expect(report).toMatchObject({ rowsRead: 6, rowsAdded: 4 });
    expect(rows(path)).toEqual([[1, 5], [1, big], [5, 1], [big, 1]]);
  });

  it('matches the generated graph: stats see every user and edge', async () => {
    const path = freshDbPath();
    const graph = generateBarabasiAlbert({ users: 3000, m: 4, seed: 9 });
    await load(path, await edgeListText(graph));
    const store = openStore(path);
    const stats = graphStats(store, path);
    store.close();
    expect(stats.users).toBe(3000);
    expect(stats.subscriptions).toBe(graph.endpoints.length);
    expect(stats.subscribers.max).toBeGreaterThan(10 * stats.subscribers.mean);
    expect(stats.hubs).toHaveLength(10);
    expect(stats.histogram.reduce((sum, [, users]) => sum + users, 0)).toBe(3000);
  });

  const scratchFiles = () => readdirSync(dir).filter((name) => name.includes('.load-'));

  it('into an empty store: builds both tables in parallel and copies them in, leaving no scratch files', async () => {
    const path = freshDbPath();
    const text = await edgeListText(generateBarabasiAlbert({ users: 2000, m: 3, seed: 6 }));
    const phases = new Set<string>();
    const store = openStore(path);
    const report = await bulkLoad(store, Readable.from([Buffer.from(text)]), 'edges.txt', { onProgress: (p) => phases.add(p.phase) });
    store.close();
    expect(report).toMatchObject({ parallelBuild: true, rowsAdded: report.rowsRead });
    expect([...phases]).toEqual(['read', 'build', 'copy']);
    expect(scratchFiles()).toEqual([]);
    const pairs = rows(path);
    expect(pairs).toHaveLength(report.rowsRead);
    // The same input into a non-empty store (one unrelated pair first) takes the insert path and gives the same rows plus that one.
    const other = freshDbPath();
    const second = openStore(other);
    second.addSubscriptions([[1_000_000, 1]]);
    const report2 = await bulkLoad(second, Readable.from([Buffer.from(text)]), 'edges.txt');
    second.close();
    expect(report2).toMatchObject({ parallelBuild: false, rowsAdded: report.rowsRead });
    expect(rows(other)).toEqual([...pairs, [1_000_000, 1]]);
  });

  it('scratch tables have the live shape, so the copy is a record transfer (RowData: records copied undecoded)', () => {
    const scratchPath = join(dir, 'shape-check.db');
    const scratch = new Database(scratchPath);
    scratch.exec(`${TABLES.subscriptions}; ${TABLES.subscriptions_by_subscriber};`);
    // A control: the same columns and key in a rowid table.
    scratch.exec(TABLES.subscriptions.replace('CREATE TABLE subscriptions', 'CREATE TABLE with_rowid').replace(') WITHOUT ROWID', ')'));
    scratch.close();
    const store = openStore(freshDbPath());
    store.db.prepare('ATTACH ? AS src').run(scratchPath);
    for (const table of Object.keys(TABLES)) {
      const opcodes = (store.db.prepare(`EXPLAIN INSERT INTO main.${table} SELECT * FROM src.${table}`).all() as { opcode: string }[]).map((op) => op.opcode);
      // The program also holds the row-by-row path SQLite falls back to when the destination is not empty.
      expect(opcodes).toContain('RowData');
    }
    const control = (store.db.prepare('EXPLAIN INSERT INTO main.subscriptions SELECT * FROM src.with_rowid').all() as { opcode: string }[]).map((op) => op.opcode);
    expect(control).not.toContain('RowData');
    store.db.exec('DETACH src');
    store.close();
    rmSync(scratchPath);
  });

  it('into an empty store: a bad line writes nothing, not even scratch files', async () => {
    const path = freshDbPath();
    const error = await load(path, '1 2\n3 4\n5 x\n').catch((err: unknown) => err);
    expect(error).toMatchObject({ source: 'edges.txt', line: 3, content: '5 x' });
    expect(scratchFiles()).toEqual([]);
    expect(rows(path)).toEqual([]);
  });

  it('into an empty store: a failure while building or copying commits nothing and removes the scratch files', async () => {
    for (const failIn of ['build', 'copy']) {
      const path = freshDbPath();
      const store = openStore(path);
      const loading = bulkLoad(store, Readable.from([Buffer.from('1 2\n2 3\n')]), 'edges.txt', {
        onProgress: (p) => {
          if (p.phase === failIn) throw new Error(`injected failure in ${failIn}`);
        },
      });
      await expect(loading).rejects.toThrow(`injected failure in ${failIn}`);
      expect(store.count()).toBe(0);
      expect(store.db.pragma('database_list').length).toBe(1);
      expect(scratchFiles()).toEqual([]);
      // And the store is usable: the next load goes through.
      const report = await bulkLoad(store, Readable.from([Buffer.from('1 2\n2 3\n')]), 'edges.txt');
      expect(report).toMatchObject({ parallelBuild: true, rowsAdded: 4 });
      store.close();
      expect(rows(path)).toEqual([[1, 2], [2, 1], [2, 3], [3, 2]]);
    }
  });

  it('reads stdin through `c1m friends load -`', () => {
    const path = freshDbPath();
    const [node, ...args] = c1mArgv(['friends', 'load', '-', '--db', path, '--one-way']);
    const run = spawnSync(node, args, { input: '1 2\n3 2\n', encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/2 rows read, 2 added/);
    expect(rows(path)).toEqual([[1, 2], [3, 2]]);

    const bad = spawnSync(node, c1mArgv(['friends', 'load', '-', '--db', path]).slice(1), { input: '4 5\n6 seven\n', encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('stdin:2: expected two positive integers, got "6 seven"');
    expect(rows(path)).toEqual([[1, 2], [3, 2]]);
  });
});
