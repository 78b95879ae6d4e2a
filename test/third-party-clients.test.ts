/**
 * SSE resume through the `Last-Event-ID` header, as clients nobody here wrote
 * use it: a raw HTTP client that sends only the header (no ?lastEventId=), and
 * the npm `eventsource` package, whose own reconnect sends the header after
 * the server ends its stream. On one process and through an edge of a cluster
 * (router, nats-server, edges on one port). Each gets every message once, in
 * order.
 */
import { EventSource } from 'eventsource';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import type { RouterStats } from '../cluster/router-process.js';
import { api, SseClient, spawnServer, stopChild, tempDir, untilStreamsKnown } from './helpers.js';
import { until } from '../bench/until.js';

/** A send through the API; its `<id> <message>` as a resumed client shows it. */
async function send(apiPort: number, user: number, text: string): Promise<{ line: string; delivered: number }> {
  const { status, json } = await api(apiPort, 'POST', `/send/${user}`, text);
  expect(status, `send to ${user}: ${JSON.stringify(json)}`).toBe(200);
  return { line: `${json.id} ${text}`, delivered: json.delivered };
}

const lines = (client: SseClient) => client.events.slice(1).map((e) => (e.event === 'lost' ? `lost ${e.data}` : `${e.id} ${e.data}`));

/**
 * The npm EventSource, its requests recorded: each one's query and Last-Event-ID.
 * While `hold()` is on, its reconnects wait (the client is away) until `release()`.
 */
class RecordedEventSource {
  readonly received: string[] = [];
  /** Each request's query, its Last-Event-ID, and the id of the last message received before it. */
  readonly requests: { search: string; lastEventId: string | null; lastReceived: string | null }[] = [];
  welcomes = 0;
  readonly source: EventSource;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;

  constructor(url: string) {
    this.source = new EventSource(url, {
      fetch: async (input, init) => {
        await this.gate;
        const lastReceived = this.received.at(-1)?.split(' ')[0] ?? null;
        this.requests.push({ search: new URL(String(input)).search, lastEventId: new Headers(init?.headers).get('last-event-id'), lastReceived });
        return fetch(input, init);
      },
    });
    this.source.addEventListener('welcome', () => this.welcomes++);
    this.source.onmessage = (e) => this.received.push(`${e.lastEventId} ${e.data}`);
  }

  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  /** Every reconnect resumed through the header alone, from the last id received before it. */
  expectResumedByHeader(): void {
    expect(this.requests.length).toBeGreaterThan(1);
    for (const r of this.requests) expect(r.search).toBe('');
    for (const r of this.requests) expect(r.lastEventId).toBe(r.lastReceived);
  }
}

describe('one process', () => {
  const db = `${tempDir()}/c1m.db`;
  // A small backlog, so that a replay of what was missed comes in parts: the server ends the stream after each.
  const args = ['--db', db, '--max-backlog', '4096', '--max-message', '1024'];
  let server: Awaited<ReturnType<typeof spawnServer>>;
  beforeAll(async () => {
    server = await spawnServer(args);
  });
  afterAll(() => stopChild(server?.child));

  it('a raw client resumes with only the Last-Event-ID header', async () => {
    const first = await SseClient.open(server.port, 3);
    const seen = await send(server.apiPort, 3, 'seen');
    await until('the first message', () => lines(first).includes(seen.line));
    first.close();
    const missed = [(await send(server.apiPort, 3, 'missed one')).line, (await send(server.apiPort, 3, 'missed two')).line];
    const back = await SseClient.open(server.port, 3, '', { 'Last-Event-ID': seen.line.split(' ')[0] });
    await until('the replay', () => lines(back).length >= 2);
    const live = await send(server.apiPort, 3, 'live');
    await until('the live message', () => lines(back).includes(live.line));
    expect(lines(back)).toEqual([...missed, live.line]);
    back.close();
  });

  it('npm eventsource resumes by itself across a restart and a replay in parts: every message once, in order', async () => {
    const client = new RecordedEventSource(`http://127.0.0.1:${server.port}/sse/4`);
    try {
      await until('the welcome', () => client.welcomes === 1, 10_000);
      const sent = [(await send(server.apiPort, 4, 'before the restart')).line];
      await until('the first message', () => client.received.length === 1);
      client.hold();
      await stopChild(server.child);
      server = await spawnServer([...args, '--port', String(server.port)]);
      // Eight of 700 bytes: more than half the backlog, so the replay takes several streams, each ended by the server.
      for (let i = 0; i < 8; i++) sent.push((await send(server.apiPort, 4, `missed ${i} ${'x'.repeat(700)}`)).line);
      client.release();
      await until('every missed message', () => client.received.length === sent.length, 45_000);
      await until('the last welcome', () => client.welcomes === client.requests.length, 10_000);
      sent.push((await send(server.apiPort, 4, 'live')).line);
      await until('the live message', () => client.received.length === sent.length, 10_000);
      expect(client.received).toEqual(sent);
      expect(client.welcomes, 'streams the replay took').toBeGreaterThanOrEqual(3);
      client.expectResumedByHeader();
    } finally {
      client.source.close();
    }
  });
});

describe('through an edge of a cluster', () => {
  let cluster: ClusterProcess;
  beforeAll(async () => {
    cluster = await spawnCluster(['--edges', '2', '--db', `${tempDir()}/c1m.db`]);
  });
  afterAll(() => stopChild(cluster?.child));

  const stats = async () => (await api(cluster.apiPort, 'GET', '/stats')).json as RouterStats;
  /** Until the router's directory holds exactly `n` streams: a send then reaches every one of them. */
  const streamsKnown = (n: number) => untilStreamsKnown(cluster.apiPort, n);

  it('a raw client resumes with only the Last-Event-ID header', async () => {
    const first = await SseClient.open(cluster.port, 13);
    await streamsKnown(1);
    const seen = await send(cluster.apiPort, 13, 'seen');
    expect(seen.delivered).toBe(1);
    await until('the first message', () => lines(first).includes(seen.line));
    first.close();
    await streamsKnown(0);
    const missed = [(await send(cluster.apiPort, 13, 'missed one')).line, (await send(cluster.apiPort, 13, 'missed two')).line];
    const back = await SseClient.open(cluster.port, 13, '', { 'Last-Event-ID': seen.line.split(' ')[0] });
    await until('the replay', () => lines(back).length >= 2, 10_000);
    await streamsKnown(1);
    const live = await send(cluster.apiPort, 13, 'live');
    expect(live.delivered).toBe(1);
    await until('the live message', () => lines(back).includes(live.line), 10_000);
    expect(lines(back)).toEqual([...missed, live.line]);
    back.close();
    await streamsKnown(0);
  });

  it('npm eventsource resumes by itself after its edge is killed with kill -9: every message once, in order', async () => {
    const client = new RecordedEventSource(`http://127.0.0.1:${cluster.port}/sse/14`);
    try {
      await until('the welcome', () => client.welcomes === 1, 10_000);
      await streamsKnown(1);
      const sent = [(await send(cluster.apiPort, 14, 'before the kill')).line];
      await until('the first message', () => client.received.length === 1);
      // The edge holding it as the router's directory places it: an edge's own count comes once a second, and may be stale.
      const holding = (await stats()).edges.filter((e) => e.directoryStreams > 0);
      expect(holding).toHaveLength(1);
      const [killed] = holding;
      client.hold();
      process.kill(killed.pid, 'SIGKILL');
      for (let i = 0; i < 3; i++) sent.push((await send(cluster.apiPort, 14, `while its edge was down ${i}`)).line);
      client.release();
      await until('every missed message', () => client.received.length === sent.length, 30_000);
      // Until the killed edge's new run replaced it, the directory may still count the stream it held.
      await until(
        "the killed edge's new run",
        async () => {
          const edge = (await stats()).edges.find((e) => e.id === killed.id);
          expect(edge?.state).toBe('up');
          expect(edge?.pid).not.toBe(killed.pid);
          return true;
        },
        15_000,
        100,
      );
      await streamsKnown(1);
      const live = await send(cluster.apiPort, 14, 'live');
      expect(live.delivered).toBe(1);
      sent.push(live.line);
      await until('the live message', () => client.received.length === sent.length, 10_000);
      expect(client.received).toEqual(sent);
      client.expectResumedByHeader();
    } finally {
      client.source.close();
    }
  });
});
