/**
 * `c1m cluster` with real processes: nats-server, a router, several edges
 * sharing one port. Clients are plain HTTP streams on loopback.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { NatsBus } from '../cluster/nats-bus.js';
import { busWindowMs, SUBJECTS } from '../cluster/messages.js';
import { credsFile } from '../cluster/nats-auth.js';
import type { RouterStats } from '../cluster/router-process.js';
import { LatencyHistogram } from '../router/latency.js';
import { spawnC1m } from '../cluster/supervisor.js';
import { childrenOf, commOf, isAlive, spawnCluster, type ClusterProcess } from '../loadgen/server-process.js';
import { api, runCli, StreamClient, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

/** A browser-like client that opens its stream again whenever it ends, and keeps every line it ever received. */
class ReconnectingClient {
  private current!: StreamClient;
  readonly received: string[] = [];
  reconnects = 0;
  private closed = false;
  private seen = 0;
  constructor(
    private readonly port: number,
    readonly user: number,
  ) {
    this.connect();
  }
  private connect(): void {
    this.current = new StreamClient(this.port, `/test/${this.user}`);
    this.seen = 0;
    const poll = setInterval(() => {
      const fresh = this.current.messages.slice(this.seen);
      this.seen += fresh.length;
      this.received.push(...fresh);
      if (this.current.ended && !this.closed) {
        clearInterval(poll);
        this.reconnects++;
        setTimeout(() => this.connect(), 50);
      } else if (this.closed) clearInterval(poll);
    }, 10);
  }
  get welcomed(): boolean {
    return this.current.status === 200 && this.current.lines.length > 0 && !this.current.ended;
  }
  close(): void {
    this.closed = true;
    this.current.close();
  }
}

const stats = async (c: ClusterProcess) => (await api(c.apiPort, 'GET', '/stats')).json as RouterStats;
const send = async (c: ClusterProcess, user: number, text: string) => (await api(c.apiPort, 'POST', `/send/${user}`, text)).json.delivered as number;

/**
 * Sends `text` from `from`, then a sentinel to every other client's own id,
 * and checks that exactly `expected` users received `text`: the sentinels
 * prove everyone else's stream is live and would have shown it.
 */
async function expectOnly(c: ClusterProcess, clients: ReconnectingClient[], from: number, text: string, expected: number[]) {
  await send(c, from, text);
  const others = clients.filter((cl) => !expected.includes(cl.user));
  const sentinel = `${text}-sentinel`;
  for (const user of new Set(others.map((cl) => cl.user))) await send(c, user, sentinel);
  await until('the sentinel on every other stream', () => { expect(others.filter((cl) => !cl.received.includes(sentinel)).map((cl) => cl.user)).toEqual([]); return true; });
  await until('the message on every expected stream', () => { expect(clients.filter((cl) => expected.includes(cl.user) && !cl.received.includes(text)).map((cl) => cl.user)).toEqual([]); return true; });
  for (const cl of others) expect(cl.received, `user ${cl.user} must not receive ${text}`).not.toContain(text);
}

/**
 * The bus options of an edge started by hand on a running cluster: its user is added with c1m
 * nats-config (the others keep theirs) and nats-server reloads its configuration, as an operator would.
 */
async function edgeUser(c: ClusterProcess, id: string): Promise<string[]> {
  const written = await runCli(['nats-config', '--dir', c.natsDir, '--edges', id]);
  expect(written.code, written.stderr).toBe(0);
  // The nats-server running now: the supervisor may have restarted it since the cluster was ready.
  const nats = childrenOf(c.child.pid!).find((pid) => commOf(pid) === 'nats-server')!;
  const reloads = () => c.output().split('Reloaded server configuration').length;
  const before = reloads();
  process.kill(nats, 'SIGHUP');
  await until('the edge to reload its credentials', () => { expect(reloads()).toBeGreaterThan(before); return true; });
  return ['--nats', c.nats, '--nats-creds', credsFile(c.natsDir, 'edge', id)];
}

describe('c1m cluster: 3 edges, a router, nats-server', () => {
  let cluster: ClusterProcess;
  const clients: ReconnectingClient[] = [];
  const USERS = 30;
  const TABS_OF_1 = 12;

  beforeAll(async () => {
    const dir = tempDir();
    cluster = await spawnCluster(['--edges', '3', '--db', `${dir}/c1m.db`, '--edge-id-prefix', 'e', '--drain-rate', '200']);
    // Friends: 1-2, 2-3 (mutual); everyone else has none.
    const pairs = [[1, 2], [2, 1], [2, 3], [3, 2]];
    expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify(pairs))).status).toBe(200);
    for (let user = 1; user <= USERS; user++) clients.push(new ReconnectingClient(cluster.port, user));
    for (let tab = 1; tab < TABS_OF_1; tab++) clients.push(new ReconnectingClient(cluster.port, 1));
    await until('every client welcomed', () => { expect(clients.every((cl) => cl.welcomed)).toBe(true); return true; });
  });

  afterAll(async () => {
    for (const cl of clients) cl.close();
    if (cluster) await stopChild(cluster.child);
  });

  const total = () => USERS + TABS_OF_1 - 1;

  test('spreads streams over the edges and delivers to the sender and its friends on every edge, nobody else', async () => {
    // Edges report their own counts in their heartbeat, once a second.
    await until(
      'the router to count every stream',
      async () => {
        const s = await stats(cluster);
        expect(s.connections).toBe(total());
        expect(s.edges.reduce((n, e) => n + e.streams, 0)).toBe(total());
        return true;
      },
      10_000,
    );
    const s = await stats(cluster);
    expect(s.edges.map((e) => e.id).sort()).toEqual(['e0', 'e1', 'e2']);
    expect(s.edges.map((e) => [e.state, e.streams > 0])).toEqual([['up', true], ['up', true], ['up', true]]);
    // 12 tabs of user 1 over 3 edges: all on one edge has odds of 3^-11.
    expect(await send(cluster, 2, 'from 2')).toBe(TABS_OF_1 + 2); // 1 (12 tabs), 2, 3
    await expectOnly(cluster, clients, 2, 'again from 2', [1, 2, 3]);
    expect(clients.filter((cl) => cl.user === 1).every((cl) => cl.received.includes('from 2'))).toBe(true);
    await expectOnly(cluster, clients, 7, 'from 7', [7]);
  });

  test('GET /metrics reports the cluster in Prometheus format, per edge', async () => {
    await until(
      "the cluster's metrics",
      async () => {
        const { status, text } = await api(cluster.apiPort, 'GET', '/metrics');
        expect(status).toBe(200);
        expect(text).toMatch(new RegExp(`^c1m_streams ${total()}$`, 'm'));
        expect(text).toMatch(/^c1m_edge_streams\{edge="e0",state="up"\} \d+$/m);
        // Edges ship their latency counts with their heartbeat.
        expect(text).toMatch(/^c1m_send_to_write_seconds_count [1-9]\d*$/m);
        return true;
      },
      3000,
    );
  });

  test('kill -9 an edge: it is restarted, its users leave the directory within 5 s, sends to the others keep working', async () => {
    const before = await stats(cluster);
    const victim = before.edges.reduce((a, b) => (b.streams > a.streams ? b : a));
    const killedAt = Date.now();
    process.kill(victim.pid, 'SIGKILL');
    // Its old run's users leave the directory when the restarted run (new pid) takes its place.
    await until(
      "the killed edge's new run",
      async () => {
        const edge = (await stats(cluster)).edges.find((e) => e.id === victim.id);
        expect(edge).toMatchObject({ state: 'up' });
        expect(edge!.pid).not.toBe(victim.pid);
        return true;
      },
      15_000,
    );
    const gone = Date.now() - killedAt;
    expect(gone).toBeLessThan(5000);
    // Its clients reconnect (to any edge); then everyone receives again.
    await until('the router to count every stream', async () => { expect((await stats(cluster)).connections).toBe(total()); return true; }, 15_000);
    await expectOnly(cluster, clients, 3, 'after edge kill', [2, 3]);
  });

  test('restart the router: the directory is rebuilt and sends reach everyone connected', async () => {
    const before = await stats(cluster);
    process.kill(before.pid, 'SIGKILL');
    await until(
      'the restarted router',
      async () => {
        const s = await stats(cluster); // throws while the supervisor restarts it
        expect(s.pid).not.toBe(before.pid);
        expect(s.connections).toBe(total());
        return true;
      },
      15_000,
    );
    await expectOnly(cluster, clients, 1, 'after router restart', [1, 2]);
  });

  test('restart nats-server: everything reconnects by itself and sends work again', async () => {
    expect(isAlive(cluster.pids.nats)).toBe(true);
    process.kill(cluster.pids.nats, 'SIGKILL');
    await until(
      'the router to count every stream',
      async () => {
        const s = await stats(cluster);
        expect(s.connections).toBe(total());
        expect(s.edges.map((e) => [e.state, e.synced])).toEqual([['up', true], ['up', true], ['up', true]]);
        return true;
      },
      20_000,
    );
    // Core NATS is at-most-once: what was sent while an edge was still reconnecting is lost, so probe until one arrives.
    let probes = 0;
    await until(
      'a probe reaching every user',
      async () => {
        const probe = `probe-${++probes}`;
        for (let user = 1; user <= USERS; user++) await send(cluster, user, probe);
        await new Promise((r) => setTimeout(r, 200));
        expect(clients.filter((cl) => !cl.received.includes(probe)).map((cl) => cl.user)).toEqual([]);
        return true;
      },
      10_000,
    );
    await expectOnly(cluster, clients, 2, 'after nats restart', [1, 2, 3]);
  });

  test('drain an edge: its clients reconnect to the others; undrain puts it back', async () => {
    const before = await stats(cluster);
    const target = before.edges.find((e) => e.streams > 0)!;
    const admin = ['--nats', cluster.nats, '--nats-creds', credsFile(cluster.natsDir, 'admin')];
    const drained = await runCli(['admin', 'drain', target.id, ...admin]);
    expect(drained.code, drained.stderr).toBe(0);
    expect(JSON.parse(drained.stdout)).toMatchObject({ edge: target.id, state: 'draining' });
    await until(
      'the drained edge empty',
      async () => {
        const s = await stats(cluster);
        expect(s.edges.find((e) => e.id === target.id)!.streams).toBe(0);
        expect(s.connections).toBe(total());
        return true;
      },
      15_000,
    );
    expect(clients.every((cl) => cl.welcomed)).toBe(true);
    await expectOnly(cluster, clients, 2, 'after drain', [1, 2, 3]);
    const undrained = await runCli(['admin', 'undrain', target.id, ...admin]);
    expect(JSON.parse(undrained.stdout)).toMatchObject({ edge: target.id, state: 'up' });
    const unknown = await runCli(['admin', 'drain', 'no-such-edge', ...admin]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('did not answer');
  });

  test('an edge that dies for good (no supervisor) is dropped with its users within 5 s', async () => {
    const lone = spawnC1m(['edge', ...(await edgeUser(cluster, 'lone')), '--id', 'lone', '--host', '127.0.0.1', '--port', '0']);
    const port = await new Promise<number>((resolve) => {
      createInterface({ input: lone.stdout }).on('line', (line) => line.includes('c1m edge listening') && resolve(JSON.parse(line).port));
    });
    const mine = [new ReconnectingClient(port, 1), new ReconnectingClient(port, 40)];
    try {
      await until("the lone edge's two streams", async () => { expect((await stats(cluster)).edges.find((e) => e.id === 'lone')).toMatchObject({ directoryStreams: 2 }); return true; });
      await expectOnly(cluster, [...clients, ...mine], 2, 'to the lone edge too', [1, 2, 3]);
      const killedAt = Date.now();
      lone.kill('SIGKILL');
      await until('the lone edge down', async () => { expect((await stats(cluster)).edges.find((e) => e.id === 'lone')).toMatchObject({ state: 'down', directoryStreams: 0 }); return true; }, 10_000);
      expect(Date.now() - killedAt).toBeLessThan(5000);
      expect(await send(cluster, 40, 'to nobody')).toBe(0);
    } finally {
      for (const cl of mine) cl.close();
      lone.kill('SIGKILL');
    }
  });

  test('SIGTERM to one edge drains it: its streams end cleanly, the routers forget it, it exits', async () => {
    const lone = spawnC1m(['edge', ...(await edgeUser(cluster, 'leaving')), '--id', 'leaving', '--host', '127.0.0.1', '--port', '0', '--drain-rate', '100']);
    const port = await new Promise<number>((resolve) => {
      createInterface({ input: lone.stdout }).on('line', (line) => line.includes('c1m edge listening') && resolve(JSON.parse(line).port));
    });
    const mine = [await StreamClient.open(port, 50), await StreamClient.open(port, 51)];
    try {
      await until("the leaving edge's two streams", async () => { expect((await stats(cluster)).edges.find((e) => e.id === 'leaving')).toMatchObject({ directoryStreams: 2 }); return true; });
      const exited = new Promise<number | null>((resolve) => lone.once('exit', resolve));
      lone.kill('SIGTERM');
      await until("the leaving edge's streams to end", () => { expect(mine.every((c) => c.ended)).toBe(true); return true; });
      expect(await exited).toBe(0);
      // A stopping edge says so: the routers drop it at once, not at the heartbeat timeout.
      await until('the leaving edge down at once', async () => { expect((await stats(cluster)).edges.find((e) => e.id === 'leaving')).toMatchObject({ state: 'down', directoryStreams: 0 }); return true; }, 2000);
    } finally {
      for (const c of mine) c.close();
      lone.kill('SIGKILL');
    }
  });

  test('stops every process it started on SIGTERM', async () => {
    const pids = [cluster.pids.router, ...(await stats(cluster)).edges.map((e) => e.pid)];
    for (const cl of clients) cl.close();
    await stopChild(cluster.child);
    await until('every process of the cluster to exit', () => { expect(pids.filter(isAlive)).toEqual([]); return true; }, 15_000);
  });
});

describe('c1m cluster: batch windows', () => {
  test("the router's batch window grows with the number of live edges and shrinks when they go", async () => {
    // Fake edges need a bus without users: an edge's credentials let it speak only on its own subject.
    const cluster = await spawnCluster(['--edges', '1', '--db', `${tempDir()}/c1m.db`, '--bus-insecure']);
    const bus = await NatsBus.connect(cluster.nats, { name: 'test-fake-edges', persistent: false });
    const fakes = Array.from({ length: 20 }, (_, i) => `fake${i}`);
    const stats0 = { pid: 0, state: 'up' as const, streams: 0, capacity: 100, chunks: 0, bytes: 0, slowConsumerCloses: 0, authFailures: 0, rss: 0 };
    const heartbeat = () => fakes.forEach((edge) => bus.publish(SUBJECTS.presence(edge), { t: 'status', boot: 'b', seq: 0, stats: stats0, latency: LatencyHistogram.merge([]) }));
    const timer = setInterval(heartbeat, 500);
    try {
      expect((await stats(cluster)).batchWindowMs).toBe(busWindowMs(1));
      heartbeat();
      await until('the batch window at 21 edges', async () => { expect((await stats(cluster)).batchWindowMs).toBe(busWindowMs(21)); return true; });
      expect(busWindowMs(21)).toBeGreaterThan(busWindowMs(1));
      expect([busWindowMs(21), busWindowMs(51)]).toEqual([21, 51]); // whole ms: c1m cluster passes it to its edges as --presence-ms
      clearInterval(timer);
      // Silent edges are dropped after the edge timeout (3 s).
      await until('the batch window back at 1 edge', async () => { expect((await stats(cluster)).batchWindowMs).toBe(busWindowMs(1)); return true; }, 10_000);
    } finally {
      clearInterval(timer);
      await bus.close();
      await stopChild(cluster.child);
    }
  });
});

describe('c1m cluster: edges that fill up', () => {
  test('a full edge stops accepting; later connections land on the others, none refused or reset', async () => {
    // Two edges of 20 pause at 19 each: 37 streams force at least one to fill and stop accepting.
    const cluster = await spawnCluster(['--edges', '2', '--max-connections', '20', '--db', ':memory:']);
    const clients: StreamClient[] = [];
    try {
      for (let i = 0; i < 37; i++) clients.push(await StreamClient.open(cluster.port, 100 + i));
      expect(clients.filter((cl) => cl.status !== 200 || cl.ended)).toEqual([]);
      await until(
        'the edges to count 37 streams',
        async () => {
          const s = await stats(cluster);
          expect(s.edges.reduce((n, e) => n + e.streams, 0)).toBe(37);
          expect(s.edges.filter((e) => e.state === 'full').length).toBeGreaterThan(0);
          expect(s.edges.every((e) => e.streams <= 20)).toBe(true);
          return true;
        },
        3000,
      );
    } finally {
      for (const cl of clients) cl.close();
      await stopChild(cluster.child);
    }
  });
});

describe('c1m cluster: two routers', () => {
  test('share the API port and the bus sends; each keeps the full directory; every message arrives once', async () => {
    const dir = tempDir();
    const cluster = await spawnCluster(['--edges', '2', '--routers', '2', '--history-seconds', '0', '--db', `${dir}/c1m.db`]);
    const clients: ReconnectingClient[] = [];
    const bus = await NatsBus.connect(cluster.nats, { name: 'test-backend', persistent: false, creds: credsFile(cluster.natsDir, 'backend') });
    try {
      expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify([[2, 1], [3, 1]]))).status).toBe(200);
      for (let user = 1; user <= 6; user++) clients.push(new ReconnectingClient(cluster.port, user));
      await until('every client welcomed', () => { expect(clients.every((cl) => cl.welcomed)).toBe(true); return true; });
      // New connections to the shared API port land on either router: each must hold all 6 streams.
      await until(
        'both routers to hold all 6 streams',
        async () => {
          const pids = new Set<number>();
          for (let i = 0; i < 20; i++) {
            const s = (await api(cluster.apiPort, 'GET', '/stats', undefined, { connection: 'close' })).json as RouterStats;
            expect(s.connections).toBe(6);
            pids.add(s.pid);
          }
          expect(pids.size).toBe(2);
          return true;
        },
        10_000,
      );
      for (let i = 0; i < 20; i++) expect(await send(cluster, 1, `http ${i}`)).toBe(3);
      // A backend on the bus: the queue group hands each send to exactly one router.
      for (let i = 0; i < 20; i++) expect(await bus.request(SUBJECTS.send, { t: 'send', user: 1, message: `bus ${i}` })).toEqual({ t: 'sent', delivered: 3 });
      await expectOnly(cluster, clients, 1, 'last', [1, 2, 3]);
      for (const cl of clients.filter((c) => c.user <= 3)) {
        const got = cl.received.filter((line) => /^(http|bus) \d+$/.test(line));
        expect(got).toHaveLength(40);
        expect(new Set(got).size).toBe(40);
      }
    } finally {
      await bus.close();
      for (const cl of clients) cl.close();
      await stopChild(cluster.child);
    }
  });
});

describe('c1m cluster: without nats-server', () => {
  test('says at once what is missing and how to get it, and exits 1', async () => {
    const started = Date.now();
    await expect(spawnCluster(['--db', ':memory:'], { PATH: tempDir() })).rejects.toThrow(/exited with 1.*nats-server.*apt-get install nats-server.*--nats URL/s);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('c1m cluster: secrets', () => {
  test('--token guards the router API and --stream-secret the edges, as in c1m server', async () => {
    const cluster = await spawnCluster(['--edges', '1', '--db', ':memory:', '--token', 'api-secret', '--stream-secret', 'stream-secret-of-at-least-32-bytes']);
    const clients: StreamClient[] = [];
    try {
      expect((await api(cluster.apiPort, 'GET', '/stats')).status).toBe(401);
      const auth = { authorization: 'Bearer api-secret' };
      expect((await api(cluster.apiPort, 'GET', '/stats', undefined, auth)).status).toBe(200);
      clients.push(await StreamClient.open(cluster.port, 5));
      expect(clients[0].status).toBe(401);
      const minted = await runCli(['token', '5', '--ttl', '60', '--stream-secret', 'stream-secret-of-at-least-32-bytes']);
      clients.push(await StreamClient.open(cluster.port, `5?token=${minted.stdout.trim()}`));
      expect(clients[1].status).toBe(200);
      await until('the send delivered', async () => { expect((await api(cluster.apiPort, 'POST', '/send/5', 'hello', auth)).json).toMatchObject({ delivered: 1 }); return true; });
      await until('the message', () => { expect(clients[1].messages).toContain('hello'); return true; });
    } finally {
      for (const cl of clients) cl.close();
      await stopChild(cluster.child);
    }
  });
});

describe('c1m cluster --port-per-edge', () => {
  test('edge i listens on a port of its own; a send reaches a client on each; bad port ranges are refused', async () => {
    // --port 0 (spawnCluster's default): a free port for each edge, given in the ready line.
    const cluster = await spawnCluster(['--edges', '2', '--port-per-edge', '--db', ':memory:', '--edge-id-prefix', 'p']);
    const edges = cluster.edges as (ClusterProcess['edges'][number] & { port: number })[];
    const clients: StreamClient[] = [];
    try {
      expect(edges.map((e) => e.id)).toEqual(['p0', 'p1']);
      expect(new Set(edges.map((e) => e.port)).size).toBe(2);
      for (const [i, e] of edges.entries()) clients.push(await StreamClient.open(e.port, 10 + i));
      expect(clients.map((cl) => cl.status)).toEqual([200, 200]);
      await until('one stream on each of p0 and p1', async () => { expect((await stats(cluster)).edges.map((e) => [e.id, e.directoryStreams]).sort()).toEqual([['p0', 1], ['p1', 1]]); return true; });
      expect(await send(cluster, 10, 'to p0')).toBe(1);
      expect(await send(cluster, 11, 'to p1')).toBe(1);
      await until('each message on its own edge', () => { expect(clients.map((cl) => cl.messages)).toEqual([['to p0'], ['to p1']]); return true; });
    } finally {
      for (const cl of clients) cl.close();
      await stopChild(cluster.child);
    }
    const overlap = await runCli(['cluster', '--edges', '2', '--port-per-edge', '--port', '9000', '--agent-port', '9001', '--no-router', '--nats', 'nats://127.0.0.1:1']);
    expect(overlap.code).not.toBe(0);
    expect(overlap.stderr).toContain('overlap');
    const past = await runCli(['cluster', '--edges', '2', '--port-per-edge', '--port', '65535', '--no-router', '--nats', 'nats://127.0.0.1:1']);
    expect(past.stderr).toContain('past port 65535');
  });
});
