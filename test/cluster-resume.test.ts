/**
 * Resume on the edges of a real `c1m cluster` (nats-server with its users, a
 * router keeping the history, 3 edges on one port): a stream that comes back
 * with its last id, on whichever edge the kernel picks, gets what it missed
 * from the router's history, once each and in order, then the live messages;
 * also after its edge was killed with kill -9, and after the router was; a
 * topic it subscribes to is replayed as a user is.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import type { RouterStats } from '../cluster/router-process.js';
import { api, openStream, received, stopChild, tempDir, untilStreamsKnown, type Transport, type WsClient } from './helpers.js';
import { until } from '../bench/until.js';

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
/** One send through the router's API (to a user, or a topic), as a resumed client shows it; `expectDelivered`: the streams the router's directory must have reached. */
async function send(subject: number | string, text: string, expectDelivered?: number): Promise<string> {
  const { status, json } = await api(cluster.apiPort, 'POST', `/send/${subject}`, text);
  expect(status, `${text} to ${subject}: ${JSON.stringify(json)}`).toBe(200);
  if (expectDelivered !== undefined) expect(json.delivered, `${text} to ${subject}`).toBe(expectDelivered);
  return `${json.id} ${text}`;
}
const stats = async () => (await api(cluster.apiPort, 'GET', '/stats')).json as RouterStats;
/**
 * Until the router's directory holds exactly `n` streams (one test's streams are the only ones open): a message
 * sent then must reach each, so it is sent once and a loss shows, instead of being covered by a retry.
 */
const streamsKnown = (n: number) => untilStreamsKnown(cluster.apiPort, n);

describe.each(['chunked', 'sse', 'ws'] as const)('resume over %s on a 3-edge cluster', (transport) => {
  const user = { chunked: 11, sse: 21, ws: 31 }[transport];
  const ids = transport === 'chunked' ? '?ids=1' : '';

  it('replays what was missed from the router, once each and in order, then live; also after its edge was killed; topics as users', async () => {
    // Half the messages go to a topic the user subscribes to: the router's history replays them alike.
    const topic = `photo:${user}`;
    expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify([[user, topic]]))).json).toEqual({ added: 1 });
    const first = await open(transport, user, ids);
    await streamsKnown(1);
    const seen = await send(user, 'seen', 1);
    await until('the first message', () => received(first).includes(seen));
    first.close();
    await streamsKnown(0);
    const missed = [await send(user, 'missed one', 0), await send(topic, 'missed two', 0)];
    await send('photo:0', 'not for it', 0);
    const resumed = await open(transport, user, `?lastEventId=${seen.split(' ')[0]}`);
    await streamsKnown(1);
    const live = await send(topic, 'live', 1);
    await until('the live message', () => received(resumed).includes(live), 10_000);
    expect(received(resumed)).toEqual([...missed, live]);

    // Kill -9 the edge holding it (the only stream open now), as the router's directory places it: an edge's own count comes
    // once a second, and a stale one named the edge the first stream had left: its client comes back from the last id it saw.
    const killed = (await stats()).edges.filter((e) => e.directoryStreams > 0);
    expect(killed.map((e) => e.directoryStreams)).toEqual([1]);
    process.kill(killed[0].pid, 'SIGKILL');
    const whileAway = [await send(topic, 'while its edge was down'), await send(user, 'and to the user')];
    await until(
      "the killed edges' new runs",
      async () => {
        const edges = (await stats()).edges;
        for (const k of killed) expect(edges.find((e) => e.id === k.id)).toMatchObject({ state: 'up' });
        for (const k of killed) expect(edges.find((e) => e.id === k.id)!.pid).not.toBe(k.pid);
        return true;
      },
      15_000,
      100,
    );
    // The killed edge's new run replaced its streams: the directory now counts only the one that comes back.
    await streamsKnown(0);
    const back = await open(transport, user, `?lastEventId=${live.split(' ')[0]}`);
    await streamsKnown(1);
    const after = await send(user, 'after', 1);
    await until('the message after', () => received(back).includes(after), 10_000);
    expect(received(back)).toEqual([...whileAway, after]);
    back.close();
    await streamsKnown(0);
  });
});

it('loses nothing sent while a stream resumes on an edge: sends back to back across the hand-over', async () => {
  const first = await open('chunked', 61, '?ids=1');
  await streamsKnown(1);
  const seen = await send(61, 'seen', 1);
  await until('the first message', () => received(first).includes(seen));
  first.close();
  await streamsKnown(0);
  // The router must hear the resuming stream's login before it reads the replay: a send numbered between the two would reach neither.
  const sent: string[] = [];
  let flowing = true;
  const flow = (async () => {
    for (let i = 0; flowing && i < 2000; i++) sent.push(await send(61, `flow ${i}`));
  })();
  await until('the first sends', () => sent.length >= 5);
  const back = await open('chunked', 61, `?lastEventId=${seen.split(' ')[0]}`);
  const atWelcome = sent.length;
  await until('sends after the welcome', () => sent.length >= atWelcome + 30);
  flowing = false;
  await flow;
  await until('every message sent', () => received(back).length >= sent.length, 10_000);
  expect(received(back)).toEqual(sent);
  back.close();
  await streamsKnown(0);
});

it('a router killed with kill -9 comes back with its history: a client resumes across the restart', async () => {
  const before = await stats();
  const client = await open('sse', 51, '');
  await streamsKnown(1);
  const seen = await send(51, 'before the restart', 1);
  await until('the first message', () => received(client).includes(seen));
  const kept = await send(51, 'accepted, then the router died');
  client.close();
  process.kill(before.pid, 'SIGKILL');
  await until('another router to answer', async () => { expect((await stats()).pid).not.toBe(before.pid); return true; }, 15_000, 100);
  const afterRestart = await send(51, 'after the restart');
  const back = await open('sse', 51, `?lastEventId=${seen.split(' ')[0]}`);
  await streamsKnown(1);
  const live = await send(51, 'live', 1);
  await until('the live message', () => received(back).includes(live), 10_000);
  expect(received(back)).toEqual([kept, afterRestart, live]);
  back.close();
});

describe.each(['chunked', 'sse', 'ws'] as const)('topics a stream listens to over %s on a 3-edge cluster', (transport) => {
  const user = { chunked: 81, sse: 82, ws: 83 }[transport];
  const topic = `match:${user}`;
  const ids = transport === 'chunked' ? '?ids=1&' : '?';

  it('reach the stream on whichever edge holds it, once beside a lasting subscription, gone with it, and resume across a kill -9 of its edge', async () => {
    // The user also subscribes to a second topic it listens to: each message once all the same.
    const both = `photo:${user}`;
    expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify([[user, both]]))).json).toEqual({ added: 1 });
    const first = await open(transport, user, `${ids}topics=${topic},${both}`);
    await streamsKnown(1);
    // Listeners reach the router with the edge's presence, a little after the login it may already have counted.
    await until("the topic's probe delivered", async () => { expect((await api(cluster.apiPort, 'POST', `/send/${topic}`, 'probe')).json.delivered).toBe(1); return true; }, 10_000, 100);
    // The router counts the stream twice here (the listener and the subscriber, it cannot tell they are one); the edge writes it once.
    const seen = await send(both, 'a comment', 2);
    await until('the comment', () => received(first).includes(seen));
    expect(received(first).filter((m) => m.endsWith(' a comment'))).toEqual([seen]);
    expect(await send(`match:0`, 'not for it', 0)).toMatch(/ not for it$/);

    // The edge holding it as the router's directory places it: the edges' own counts come once a second, and a stale
    // one names the edge the previous test's stream had left, which would kill an edge this stream is not on.
    const killed = (await stats()).edges.filter((e) => e.directoryStreams > 0);
    expect(killed.map((e) => e.directoryStreams)).toEqual([1]);
    process.kill(killed[0].pid, 'SIGKILL');
    const whileAway = [await send(topic, 'while its edge was down'), await send(both, 'and to the photo'), await send(user, 'and to the user')];
    await until(
      "the killed edge's new run",
      async () => {
        const edge = (await stats()).edges.find((e) => e.id === killed[0].id);
        expect(edge).toMatchObject({ state: 'up' });
        expect(edge!.pid).not.toBe(killed[0].pid);
        return true;
      },
      15_000,
      100,
    );
    await streamsKnown(0);
    expect(await send(topic, 'to nobody', 0)).toMatch(/ to nobody$/);
    const back = await open(transport, user, `?lastEventId=${seen.split(' ')[0]}&topics=${topic},${both}`);
    await streamsKnown(1);
    await until("the topic's message after delivered", async () => { expect((await api(cluster.apiPort, 'POST', `/send/${topic}`, 'after')).json.delivered).toBe(1); return true; }, 10_000, 100);
    await until('the message after', () => received(back).some((m) => m.endsWith(' after')), 10_000);
    const got = received(back);
    const nobody = got.find((m) => m.endsWith(' to nobody'))!;
    // Every message sent since, once each, in id order: the three while away, the one to nobody (kept: it listens now), then the live ones.
    expect(got.slice(0, 4)).toEqual([...whileAway, nobody]);
    expect(got.slice(4).every((m) => m.endsWith(' after'))).toBe(true);
    expect(new Set(got).size).toBe(got.length);
    back.close();
    await streamsKnown(0);
  });
});

it("a WebSocket's subscribe on an open stream reaches the routers with its edge's presence; unsubscribed, it hears no more", async () => {
  const user = 84;
  const topic = `match:${user}`;
  const client = (await open('ws', user, '')) as WsClient;
  await streamsKnown(1);
  const answer = async (text: string) => {
    const count = client.frames.length;
    client.send(0x1, Buffer.from(text));
    await until(`the answer to ${text}`, () => client.frames.length > count);
    return `${client.frames[count].header} ${client.frames[count].payload}`;
  };
  expect(await answer(`subscribe ${topic}`)).toBe(`topics ${topic}`);
  await until("the topic's probe delivered", async () => { expect((await api(cluster.apiPort, 'POST', `/send/${topic}`, 'probe')).json.delivered).toBe(1); return true; }, 10_000, 100);
  const goal = await send(topic, 'a goal', 1);
  await until('the goal', () => received(client).includes(goal));
  expect(await answer(`unsubscribe ${topic}`)).toBe('topics ');
  // The edge stops writing the topic at once; the routers stop sending it there with the edge's next presence.
  await until('the late send to reach nobody', async () => { expect((await api(cluster.apiPort, 'POST', `/send/${topic}`, 'late')).json.delivered).toBe(0); return true; }, 10_000, 100);
  const sentinel = await send(user, 'sentinel', 1);
  await until('the sentinel', () => received(client).includes(sentinel));
  const got = received(client);
  expect(got.slice(got.indexOf('topics ') + 1)).toEqual([sentinel]);
  client.close();
  await streamsKnown(0);
});

it('tells a client whose id the history never gave that it is lost, through an edge', async () => {
  const client = await open('sse', 41, '?lastEventId=12');
  await until('lost', () => received(client).length === 1);
  expect(received(client)).toEqual(['lost expired']);
});
