import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { api, runCli, spawnServer, startServer, stopChild, StreamClient, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m | undefined;
const clients: StreamClient[] = [];
afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
});

it('generate → load → connect a user and its friends → send: exactly the user and its friends receive it', async () => {
  const dir = tempDir();
  const edges = join(dir, 'friends.txt');
  const db = join(dir, 'c1m.db');
  expect((await runCli(['friends', 'generate', '--users', '300', '--m', '3', '--seed', '11', '--out', edges])).code).toBe(0);
  const load = await runCli(['friends', 'load', edges, '--db', db]);
  expect(load.code, load.stderr).toBe(0);

  // Friends of each user, straight from the edge list (mutual).
  const friends = new Map<number, Set<number>>();
  for (const line of readFileSync(edges, 'utf8').trim().split('\n')) {
    const [a, b] = line.split(' ').map(Number);
    for (const [x, y] of [[a, b], [b, a]]) {
      if (!friends.has(x)) friends.set(x, new Set());
      friends.get(x)!.add(y);
    }
  }
  // A well-connected user that is not the biggest hub, so that plenty of users are outside its circle.
  const byDegree = [...friends.entries()].sort((p, q) => q[1].size - p[1].size);
  const [user, circle] = byDegree[3];
  const outsiders = [...friends.keys()].filter((u) => u !== user && !circle.has(u)).slice(0, 20);
  expect(circle.size).toBeGreaterThan(3);
  expect(outsiders.length).toBe(20);

  c1m = await startServer({ db, cacheMiB: 8, warmCache: true });
  const connect = async (id: number) => {
    const client = await StreamClient.open(c1m!.port, id);
    clients.push(client);
    return [id, client] as const;
  };
  const inside = await Promise.all([user, ...circle].map(connect));
  const outside = await Promise.all(outsiders.map(connect));

  expect(c1m.router.send(user, `news from ${user}`)).toBe(1 + circle.size);
  await until('every friend to receive it', () => inside.every(([, c]) => c.messages.length === 1));
  for (const [, client] of inside) expect(client.messages).toEqual([`news from ${user}`]);
  // Then a sentinel from each outsider, on the same path: each stream receives in send order, so once an outsider has
  // the last sentinel it should hear (its own, or a friend's), the news would have reached it first.
  for (const id of outsiders) c1m.router.send(id, `sentinel from ${id}`);
  const heard = (id: number) => outsiders.filter((s) => s === id || friends.get(s)!.has(id)).map((s) => `sentinel from ${s}`);
  await until('every outsider to receive its sentinels', () => outside.every(([id, c]) => c.messages.includes(heard(id).at(-1)!)));
  for (const [id, client] of outside) expect(client.messages, `user ${id} is not a friend`).toEqual(heard(id));
});

it('a bulk load into the store a running server uses: the server keeps answering, and sees the graph at the commit', async () => {
  const dir = tempDir();
  const edges = join(dir, 'friends.txt');
  const db = join(dir, 'c1m.db');
  expect((await runCli(['friends', 'generate', '--users', '50000', '--m', '5', '--seed', '3', '--out', edges])).code).toBe(0);
  const server = await spawnServer(['--db', db]);
  try {
    await api(server.apiPort, 'POST', '/subscriptions', '[[2,1]]');
    const watcher = await StreamClient.open(server.port, 2);
    clients.push(watcher);

    const load = runCli(['friends', 'load', edges, '--db', db]);
    let done = false;
    load.then(() => (done = true));
    const seen = new Set<number>();
    let answers = 0;
    let sent = 0;
    while (!done) {
      const [subscribers, send] = await Promise.all([
        api(server.apiPort, 'GET', '/subscribers/1', undefined),
        api(server.apiPort, 'POST', '/send/1', `during load ${sent++}`),
      ]);
      expect(subscribers.status).toBe(200);
      expect(send.status).toBe(200);
      seen.add(subscribers.json.length);
      answers++;
    }
    expect((await load).code).toBe(0);
    // Before the commit the server sees the old graph (just [2]); after it, user 1's whole circle.
    const after = (await api(server.apiPort, 'GET', '/subscribers/1')).json as number[];
    expect(after.length).toBeGreaterThan(20);
    expect(after).toContain(2);
    expect([...seen].every((n) => n === 1 || n === after.length)).toBe(true);
    expect(answers).toBeGreaterThan(5);
    await until('every message sent during the load', () => watcher.messages.length === sent);
  } finally {
    await stopChild(server.child);
  }
});

it('`c1m friends stats` reports the graph and writes a log-log degree chart', async () => {
  const dir = tempDir();
  const edges = join(dir, 'friends.txt');
  const db = join(dir, 'c1m.db');
  const chart = join(dir, 'degrees.svg');
  await runCli(['friends', 'generate', '--users', '2000', '--m', '4', '--seed', '5', '--out', edges]);
  await runCli(['friends', 'load', edges, '--db', db]);
  const stats = await runCli(['friends', 'stats', '--db', db, '--chart', chart]);
  expect(stats.code, stats.stderr).toBe(0);
  const edgeCount = (4 * 5) / 2 + (2000 - 5) * 4;
  expect(stats.stdout).toMatch(/users:\s+2,000/);
  expect(stats.stdout).toContain(`subscriptions:  ${(2 * edgeCount).toLocaleString('en-US')}`);
  expect(stats.stdout).toMatch(/subscribers per user: mean 7\.99, median \d+, p99 \d+, max \d+/);
  expect(stats.stdout).toMatch(/top hubs: +\d+ \(\d+\)/);
  const svg = readFileSync(chart, 'utf8');
  expect(svg).toMatch(/^<svg/);
  expect(svg).toContain('Degree distribution (log-log)');
  expect((svg.match(/<path/g) ?? []).length).toBeGreaterThan(10);
});
