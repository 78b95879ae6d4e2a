import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { runCli, startServer, StreamClient, tempDir, waitFor } from './helpers.js';

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

  c1m = await startServer({ db });
  const connect = async (id: number) => {
    const client = await StreamClient.open(c1m!.port, id);
    clients.push(client);
    return [id, client] as const;
  };
  const inside = await Promise.all([user, ...circle].map(connect));
  const outside = await Promise.all(outsiders.map(connect));

  expect(c1m.router.send(user, `news from ${user}`)).toBe(1 + circle.size);
  await waitFor(() => inside.every(([, c]) => c.messages.length === 1), 'every friend to receive it');
  for (const [, client] of inside) expect(client.messages).toEqual([`news from ${user}`]);
  await new Promise((r) => setTimeout(r, 100));
  for (const [id, client] of outside) expect(client.messages, `user ${id} is not a friend`).toEqual([]);
});
