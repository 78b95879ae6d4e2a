/**
 * Resume on the edges of a real `c1m cluster` (nats-server with its users, a
 * router keeping the history, 3 edges on one port): a stream that comes back
 * with its last id, on whichever edge the kernel picks, gets what it missed
 * from the router's history, once each and in order, then the live messages;
 * also after its edge was killed with kill -9, and after the router was.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { api, openStream, received, stopChild, tempDir, waitFor, type Transport } from './helpers.js';

let cluster: ClusterProcess;
const clients: { close(): void }[] = [];

beforeAll(async () => {
  cluster = await spawnCluster(['--edges', '3', '--db', `${tempDir()}/c1m.db`]);
});

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  if (cluster) await stopChild(cluster.child);
});

const open = async (transport: Transport, id: number, query: string) => {
  const client = await openStream(transport, cluster.port, id, query);
  clients.push(client);
  return client;
};
/** One send through the router's API, as a resumed client shows it; `expectDelivered`: the streams the router's directory must have reached. */
async function send(user: number, text: string, expectDelivered?: number): Promise<string> {
  const { status, json } = await api(cluster.apiPort, 'POST', `/send/${user}`, text);
  expect(status, `${text} to user ${user}: ${JSON.stringify(json)}`).toBe(200);
  if (expectDelivered !== undefined) expect(json.delivered, `${text} to user ${user}`).toBe(expectDelivered);
  return `${json.id} ${text}`;
}
const stats = async () => (await api(cluster.apiPort, 'GET', '/stats')).json as { pid: number; connections: number; edges: { id: string; pid: number; state: string; directoryStreams: number }[] };
/**
 * Until the router's directory holds exactly `n` streams (one test's streams are the only ones open): a message
 * sent then must reach each, so it is sent once and a loss shows, instead of being covered by a retry.
 */
const streamsKnown = (n: number) => vi.waitFor(async () => expect((await stats()).connections).toBe(n), { timeout: 15_000, interval: 50 });

describe.each(['chunked', 'sse', 'ws'] as const)('resume over %s on a 3-edge cluster', (transport) => {
  const user = { chunked: 11, sse: 21, ws: 31 }[transport];
  const ids = transport === 'chunked' ? '?ids=1' : '';

  it('replays what was missed from the router, once each and in order, then live; also after its edge was killed', async () => {
    const first = await open(transport, user, ids);
    await streamsKnown(1);
    const seen = await send(user, 'seen', 1);
    await waitFor(() => received(first).includes(seen), 'the first message');
    first.close();
    await streamsKnown(0);
    const missed = [await send(user, 'missed one', 0), await send(user, 'missed two', 0)];
    const resumed = await open(transport, user, `?lastEventId=${seen.split(' ')[0]}`);
    await streamsKnown(1);
    const live = await send(user, 'live', 1);
    await waitFor(() => received(resumed).includes(live), 'the live message', 10_000);
    expect(received(resumed)).toEqual([...missed, live]);

    // Kill -9 the edge holding it (the only stream open now), as the router's directory places it: an edge's own count comes
    // once a second, and a stale one named the edge the first stream had left: its client comes back from the last id it saw.
    const killed = (await stats()).edges.filter((e) => e.directoryStreams > 0);
    expect(killed.map((e) => e.directoryStreams)).toEqual([1]);
    process.kill(killed[0].pid, 'SIGKILL');
    const whileAway = await send(user, 'while its edge was down');
    await vi.waitFor(
      async () => {
        const edges = (await stats()).edges;
        for (const k of killed) expect(edges.find((e) => e.id === k.id)).toMatchObject({ state: 'up' });
        for (const k of killed) expect(edges.find((e) => e.id === k.id)!.pid).not.toBe(k.pid);
      },
      { timeout: 15_000, interval: 100 },
    );
    // The killed edge's new run replaced its streams: the directory now counts only the one that comes back.
    await streamsKnown(0);
    const back = await open(transport, user, `?lastEventId=${live.split(' ')[0]}`);
    await streamsKnown(1);
    const after = await send(user, 'after', 1);
    await waitFor(() => received(back).includes(after), 'the message after', 10_000);
    expect(received(back)).toEqual([whileAway, after]);
    back.close();
    await streamsKnown(0);
  });
});

it('loses nothing sent while a stream resumes on an edge: sends back to back across the hand-over', async () => {
  const first = await open('chunked', 61, '?ids=1');
  await streamsKnown(1);
  const seen = await send(61, 'seen', 1);
  await waitFor(() => received(first).includes(seen), 'the first message');
  first.close();
  await streamsKnown(0);
  // The router must hear the resuming stream's login before it reads the replay: a send numbered between the two would reach neither.
  const sent: string[] = [];
  let flowing = true;
  const flow = (async () => {
    for (let i = 0; flowing && i < 2000; i++) sent.push(await send(61, `flow ${i}`));
  })();
  await waitFor(() => sent.length >= 5, 'the first sends');
  const back = await open('chunked', 61, `?lastEventId=${seen.split(' ')[0]}`);
  const atWelcome = sent.length;
  await waitFor(() => sent.length >= atWelcome + 30, 'sends after the welcome');
  flowing = false;
  await flow;
  await waitFor(() => received(back).length >= sent.length, 'every message sent', 10_000);
  expect(received(back)).toEqual(sent);
  back.close();
  await streamsKnown(0);
});

it('a router killed with kill -9 comes back with its history: a client resumes across the restart', async () => {
  const before = await stats();
  const client = await open('sse', 51, '');
  await streamsKnown(1);
  const seen = await send(51, 'before the restart', 1);
  await waitFor(() => received(client).includes(seen), 'the first message');
  const kept = await send(51, 'accepted, then the router died');
  client.close();
  process.kill(before.pid, 'SIGKILL');
  await vi.waitFor(async () => expect((await stats()).pid).not.toBe(before.pid), { timeout: 15_000, interval: 100 });
  const afterRestart = await send(51, 'after the restart');
  const back = await open('sse', 51, `?lastEventId=${seen.split(' ')[0]}`);
  await streamsKnown(1);
  const live = await send(51, 'live', 1);
  await waitFor(() => received(back).includes(live), 'the live message', 10_000);
  expect(received(back)).toEqual([kept, afterRestart, live]);
  back.close();
});

it('tells a client whose id the history never gave that it is lost, through an edge', async () => {
  const client = await open('sse', 41, '?lastEventId=12');
  await waitFor(() => received(client).length === 1, 'lost');
  expect(received(client)).toEqual(['lost expired']);
});
