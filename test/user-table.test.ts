/**
 * The router directory's user table (router/user-table.ts) against a Map, its model: the same answers for every id
 * after any mix of sets and deletes, paged ids and ids past DENSE_IDS alike, pages emptied and filled again.
 */
import { expect, it } from 'vitest';
import { DENSE_IDS, UserTable } from '../router/user-table.js';
import { Registry, type Connection } from '../index.js';

/** A small deterministic generator (mulberry32), so that a failure replays. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

it('answers as a Map does after random sets and deletes, below and past the paged ids', () => {
  const next = random(7);
  // Ids from a few pages (so that pages empty and fill again), a wide dense range, and past DENSE_IDS.
  const id = () => {
    const r = next();
    if (r < 0.4) return 1 + Math.floor(next() * 300);
    if (r < 0.8) return 1 + Math.floor(next() * (DENSE_IDS - 1));
    return DENSE_IDS + Math.floor(next() * 1e9);
  };
  const table = new UserTable<string>();
  const model = new Map<number, string>();
  const touched: number[] = [];
  for (let i = 0; i < 20_000; i++) {
    const user = next() < 0.3 && touched.length > 0 ? touched[Math.floor(next() * touched.length)] : id();
    touched.push(user);
    if (next() < 0.55) {
      table.set(user, `v${i}`);
      model.set(user, `v${i}`);
    } else {
      expect(table.delete(user)).toBe(model.delete(user));
    }
    if (i % 1000 === 0) expect(table.size).toBe(model.size);
  }
  for (const user of touched) {
    expect(table.get(user)).toBe(model.get(user));
    expect(table.has(user)).toBe(model.has(user));
  }
  // Either side of the paged ids' end.
  for (const user of [DENSE_IDS - 1, DENSE_IDS]) {
    table.set(user, `edge ${user}`);
    model.set(user, `edge ${user}`);
    expect(table.get(user)).toBe(`edge ${user}`);
  }
  expect(table.size).toBe(model.size);
  const sorted = (entries: Iterable<[number, string]>) => [...entries].sort((a, b) => a[0] - b[0]);
  expect(sorted(table)).toEqual(sorted(model));
  expect([...table.values()].sort()).toEqual([...model.values()].sort());
  // Every id deleted: nothing left, and nothing iterates.
  for (const user of model.keys()) table.delete(user);
  expect(table.size).toBe(0);
  expect([...table]).toEqual([]);
});

it('holds a registry: deliveries, a user held twice, logouts', () => {
  const written: string[] = [];
  const conn = (user: number): Connection => ({ user, write: (chunk) => (written.push(`${user}:${chunk}`), 1), close: () => {} });
  const registry = new Registry(Infinity, undefined, new UserTable());
  const [a, b, c] = [conn(5), conn(5), conn(DENSE_IDS + 5)];
  for (const x of [a, b, c]) registry.login(x);
  expect([registry.users, registry.connections]).toEqual([2, 3]);
  expect(registry.deliver(5, Buffer.from('m'))).toBe(2);
  expect(registry.deliver(DENSE_IDS + 5, Buffer.from('n'))).toBe(1);
  expect(registry.deliver(6, Buffer.from('o'))).toBe(0);
  expect(registry.everyConnectionUser().sort()).toEqual([5, 5, DENSE_IDS + 5]);
  registry.logout(a);
  registry.logout(b);
  expect([registry.users, registry.isConnected(5)]).toEqual([1, false]);
  expect(written).toEqual(['5:m', '5:m', `${DENSE_IDS + 5}:n`]);
});
