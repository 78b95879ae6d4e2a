/**
 * The bus as a hostile client on the host would try it (issue 20): a cluster
 * started by `c1m cluster` (nats-server with a user per role), a stream held
 * by user 5, and spoofed deliveries, sends and drains with no credentials,
 * with an edge's and with a backend's. Then TLS, credentials refused, the
 * refusal of an exposed bus without credentials, and the client's behaviour
 * with a NATS cluster of two servers (connect_urls, lame duck mode).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { packChunks } from '../cluster/deliver-batch.js';
import { decode, encode, SUBJECTS, type BusMessage } from '../cluster/messages.js';
import { credsFile, edgeInbox, makeTlsFiles, ROUTER_INBOX, readCreds, writeNatsConfig } from '../cluster/nats-auth.js';
import { NatsClient, NatsFatalError } from '../cluster/nats.js';
import { createAccount } from '@nats-io/nkeys';
import { newNKeyUser, nkeyUser } from '../cluster/nkeys.js';
import { freePort, freePorts } from '../cluster/supervisor.js';
import { spawnCluster, spawnNatsServer, type ClusterProcess } from '../loadgen/server-process.js';
import { api, runCli, StreamClient, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

const HOST = '127.0.0.1';

/** The attacker's payload: a deliver to user 5, as a router would batch it. */
const SPOOF: BusMessage = { t: 'deliver', ...packChunks([Buffer.from('spoofed')], [[5]], [0], []) };

/** What a 15-line script speaking the NATS text protocol gets from the server: everything it answers to CONNECT, PUB and PING. */
function rawClient(url: string, lines: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    let got = '';
    const socket = net.connect(Number(port), hostname, () => socket.write(lines));
    socket.on('data', (d) => (got += d));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(got));
    setTimeout(() => socket.destroy(), 2000);
  });
}

/** A client of the cluster's bus with one role's credentials; the server's -ERR lines are collected. */
async function clientAs(url: string, creds: string, errors: string[]): Promise<NatsClient> {
  return NatsClient.connect([url], { name: 'test-hostile', persistent: false, user: readCreds(creds), warning: (m) => errors.push(m) });
}

/** The round trip of a PING: everything sent before it has reached the server and been answered. */
const settle = (client: NatsClient) => client.request('settle.none', new Uint8Array(0), 1000).catch(() => undefined);

describe('c1m cluster: the bus refuses what a role may not do', () => {
  let cluster: ClusterProcess;
  let stream: StreamClient;
  let edges: string[];

  beforeAll(async () => {
    cluster = await spawnCluster(['--edges', '2', '--db', ':memory:', '--edge-id-prefix', 's']);
    edges = cluster.edges.map((e) => e.id);
    stream = await StreamClient.open(cluster.port, 5);
    await until('the router to count the stream', async () => { expect((await api(cluster.apiPort, 'GET', '/stats')).json.connections).toBe(1); return true; });
  });

  afterAll(async () => {
    stream?.close();
    if (cluster) await stopChild(cluster.child);
  });

  test("no credentials: nats-server refuses the connection and the spoofed deliver with it", async () => {
    const frame = encode(SPOOF);
    const pubs = edges.map((id) => `PUB ${SUBJECTS.edge(id)} ${frame.length}\r\n${Buffer.from(frame).toString('latin1')}\r\n`).join('');
    const answer = await rawClient(cluster.nats, `CONNECT {"verbose":false}\r\n${pubs}PING\r\n`);
    expect(answer).toContain("-ERR 'Authorization Violation'");
    expect(answer).not.toContain('PONG');
    // Our own client says what is missing before it even tries.
    await expect(NatsClient.connect([cluster.nats], { name: 'test', persistent: false })).rejects.toThrow(/requires credentials \(--nats-creds\)/);
  });

  test("an edge's credentials: no deliver to any edge, no send, no drain, no listening to another edge", async () => {
    const errors: string[] = [];
    const edge = await clientAs(cluster.nats, credsFile(cluster.natsDir, 'edge', edges[0]), errors);
    try {
      for (const id of edges) edge.publish(SUBJECTS.edge(id), encode(SPOOF));
      edge.publish(SUBJECTS.send, encode({ t: 'send', user: 5, message: 'spoofed send' }));
      edge.publish(SUBJECTS.admin(edges[1]), encode({ t: 'drain' }));
      edge.publish(SUBJECTS.presence(edges[1]), encode({ t: 'presence', boot: 'b', seq: 1, in: [], out: [5] }));
      edge.subscribe(SUBJECTS.edge(edges[1]), () => undefined);
      // Replies to other processes (a backend's sent, another edge's replay) are not an edge's to read.
      edge.subscribe('_INBOX.>', () => undefined);
      edge.subscribe(`${edgeInbox(edges[1])}.>`, () => undefined);
      await settle(edge);
      await until(
        'the server to refuse every forbidden publish and subscription',
        () => {
          for (const id of edges) expect(errors).toContain(`NATS server: Permissions Violation for Publish to "${SUBJECTS.edge(id)}"`);
          expect(errors).toContain(`NATS server: Permissions Violation for Publish to "${SUBJECTS.send}"`);
          expect(errors).toContain(`NATS server: Permissions Violation for Publish to "${SUBJECTS.admin(edges[1])}"`);
          expect(errors).toContain(`NATS server: Permissions Violation for Publish to "${SUBJECTS.presence(edges[1])}"`);
          expect(errors).toContain(`NATS server: Permissions Violation for Subscription to "${SUBJECTS.edge(edges[1])}"`);
          expect(errors).toContain('NATS server: Permissions Violation for Subscription to "_INBOX.>"');
          expect(errors).toContain(`NATS server: Permissions Violation for Subscription to "${edgeInbox(edges[1])}.>"`);
          return true;
        },
      );
    } finally {
      await edge.close();
    }
  });

  test("a backend's credentials: sends go through; delivers and drains do not", async () => {
    const errors: string[] = [];
    const backend = await clientAs(cluster.nats, credsFile(cluster.natsDir, 'backend'), errors);
    try {
      for (const id of edges) {
        backend.publish(SUBJECTS.edge(id), encode(SPOOF));
        backend.publish(SUBJECTS.admin(id), encode({ t: 'drain' }));
        backend.publish(SUBJECTS.edge(id), encode({ t: 'drain' }));
      }
      // Nor may it read a user's kept messages through a replay: that is an edge's request only.
      backend.publish(SUBJECTS.replay, encode({ t: 'replay', user: 5, after: 0, budget: 1 << 20 }));
      // Nor hear the answers a leader gives to the routers.
      backend.subscribe(`${ROUTER_INBOX}.>`, () => undefined);
      const reply = decode(await backend.request(SUBJECTS.send, encode({ t: 'send', user: 5, message: 'from the backend' }), 2000));
      expect(reply).toEqual({ t: 'sent', delivered: 1, id: expect.any(Number) });
      await until(
        'the server to refuse every forbidden publish and subscription',
        () => {
          for (const id of edges) expect(errors).toContain(`NATS server: Permissions Violation for Publish to "${SUBJECTS.admin(id)}"`);
          expect(errors.filter((e) => /Violation for Publish to "c1m\.edge\./.test(e))).toHaveLength(2 * edges.length);
          expect(errors).toContain(`NATS server: Permissions Violation for Publish to "${SUBJECTS.replay}"`);
          expect(errors).toContain(`NATS server: Permissions Violation for Subscription to "${ROUTER_INBOX}.>"`);
          return true;
        },
      );
      const stats = (await api(cluster.apiPort, 'GET', '/stats')).json as { edges: { state: string }[] };
      expect(stats.edges.map((e) => e.state)).toEqual(['up', 'up']);
    } finally {
      await backend.close();
    }
  });

  test('nothing spoofed reached the stream: only the backend send and a sentinel after it; nats-server logged each refusal', async () => {
    expect((await api(cluster.apiPort, 'POST', '/send/5', 'sentinel')).json).toMatchObject({ delivered: 1 });
    await until('the sentinel', () => { expect(stream.messages).toContain('sentinel'); return true; });
    expect(stream.messages).toEqual(['from the backend', 'sentinel']);
    expect(stream.ended).toBe(false);
    const log = cluster.output();
    expect(log).toMatch(/authentication error/);
    expect(log).toMatch(/Publish Violation/);
  });
});

describe('credentials', () => {
  test('an NKey seed round-trips; a corrupt one and a readable file are refused', () => {
    const user = newNKeyUser();
    expect(user.seed).toMatch(/^SU[A-Z2-7]{56}$/);
    expect(user.publicKey).toMatch(/^U[A-Z2-7]{55}$/);
    expect(nkeyUser(user.seed).publicKey).toBe(user.publicKey);
    const flipped = user.seed.slice(0, 10) + (user.seed[10] === 'A' ? 'B' : 'A') + user.seed.slice(11);
    expect(() => nkeyUser(flipped)).toThrow(/not an NKey user seed/);
    // A valid seed of another kind (an account's, "SA…") is no user's.
    expect(() => nkeyUser(new TextDecoder().decode(createAccount().getSeed()))).toThrow(/not an NKey user seed/);
    const file = join(tempDir(), 'x.creds');
    writeFileSync(file, user.seed);
    chmodSync(file, 0o644);
    expect(() => readCreds(file)).toThrow(/may be read by others \(mode 644\): chmod 600/);
    chmodSync(file, 0o600);
    expect(readCreds(file).publicKey).toBe(user.publicKey);
  });

  test('c1m nats-config: public keys only in nats.conf; written again to add an edge, it keeps every user, the address and TLS', async () => {
    const dir = tempDir();
    const first = await runCli(['nats-config', '--dir', dir, '--edges', 'a,b', '--listen', '10.9.0.1:4222', '--tls-self-signed', '10.9.0.1']);
    expect(first.code, first.stderr).toBe(0);
    const router = readFileSync(credsFile(dir, 'router'), 'utf8');
    const again = await runCli(['nats-config', '--dir', dir, '--edges', 'c']);
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(credsFile(dir, 'router'), 'utf8')).toBe(router);
    const config = JSON.parse(readFileSync(join(dir, 'nats.conf'), 'utf8').replace(/^#.*\n/, ''));
    expect(config.listen).toBe('10.9.0.1:4222');
    expect(config.tls.cert_file).toBe(join(dir, 'server-cert.pem'));
    expect(config.authorization.users).toHaveLength(3 + 3);
    expect(JSON.stringify(config)).not.toMatch(/SU[A-Z2-7]{56}/);
    for (const id of ['a', 'b', 'c']) expect(statSync(credsFile(dir, 'edge', id)).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'server-key.pem')).mode & 0o777).toBe(0o600);
  });

  test('credentials refused: a one-off client fails, a persistent one stops retrying, c1m edge exits 1 saying why', async () => {
    const dir = tempDir();
    const port = await freePort(HOST);
    const server = await spawnNatsServer(HOST, port, ['-c', writeNatsConfig(dir, { listen: `${HOST}:${port}`, edges: ['a'] })]);
    const url = `nats://${HOST}:${port}`;
    try {
      const stranger = newNKeyUser();
      // Refused, not retried: a persistent client that retried would never settle.
      for (const persistent of [false, true]) {
        const attempt = NatsClient.connect([url], { name: 'test', persistent, user: stranger });
        await expect(attempt).rejects.toThrow(NatsFatalError);
        await expect(attempt).rejects.toThrow(/refused our credentials \(Authorization Violation\): check --nats-creds/);
      }
      const wrong = join(dir, 'wrong.creds');
      writeFileSync(wrong, stranger.seed, { mode: 0o600 });
      const edge = await runCli(['edge', '--nats', url, '--nats-creds', wrong, '--id', 'a', '--port', '0', '--host', HOST]);
      expect(edge.code).toBe(1);
      expect(edge.stderr).toMatch(/refused our credentials/);

      // Connected, then the server comes back with other users: the client gives up instead of retrying for ever.
      const fatal: Error[] = [];
      const router = await NatsClient.connect([url], { name: 'test', persistent: true, user: readCreds(credsFile(dir, 'router')), fatal: (err) => fatal.push(err) });
      await stopChild(server, 'SIGKILL');
      const other = tempDir();
      const again = await spawnNatsServer(HOST, port, ['-c', writeNatsConfig(other, { listen: `${HOST}:${port}`, edges: [] })]);
      try {
        await until('the refused credentials to be fatal', () => { expect(fatal.map((e) => e.message)).toEqual([expect.stringMatching(/refused our credentials/)]); return true; }, 10_000);
        expect(router.isClosed).toBe(true);
      } finally {
        await stopChild(again);
      }
    } finally {
      await stopChild(server);
    }
  });

  test('an exposed bus without credentials is refused by edge, router, admin and cluster unless --bus-insecure', async () => {
    const exposed = 'nats://192.0.2.1:4222'; // TEST-NET-1: never reached, the refusal comes first
    for (const args of [
      ['edge', '--nats', exposed, '--port', '0'],
      ['router', '--nats', exposed, '--db', ':memory:', '--api-port', '0'],
      ['admin', 'drain', 'e0', '--nats', exposed],
      ['cluster', '--no-router', '--nats', exposed, '--edges', '1'],
    ]) {
      const run = await runCli(args);
      expect(run.code, args[0]).not.toBe(0);
      expect(run.stderr, args[0]).toMatch(/not on loopback and no --nats-creds is given.*--bus-insecure/s);
    }
    // c1m cluster told so starts its nats-server without users (what bench:cluster --bus plain measures).
    const open = await spawnCluster(['--edges', '1', '--db', ':memory:', '--bus-insecure']);
    try {
      await (await NatsClient.connect([open.nats], { name: 'test', persistent: false })).close();
    } finally {
      await stopChild(open.child);
    }
    // Told so, it goes on and tries (and here finds nobody).
    const insecure = await runCli(['admin', 'drain', 'e0', '--nats', exposed, '--bus-insecure']);
    expect(insecure.stderr).toMatch(/cannot connect to NATS at 192\.0\.2\.1:4222/);
    // Loopback stays as it was: a one-host cluster needs nothing.
    const admin = await runCli(['admin', 'drain', 'e0', '--nats', `nats://${HOST}:${await freePort(HOST)}`]);
    expect(admin.stderr).toMatch(/ECONNREFUSED/);
  });
});

describe('TLS', () => {
  test('c1m cluster --nats-tls: streams and sends work over tls://; a wrong CA, no CA and a plain server fail closed', async () => {
    const cluster = await spawnCluster(['--edges', '1', '--db', ':memory:', '--nats-tls']);
    const stream = await StreamClient.open(cluster.port, 7);
    try {
      expect(cluster.nats).toMatch(/^tls:\/\/127\.0\.0\.1:\d+$/);
      await until('a send over TLS delivered', async () => { expect((await api(cluster.apiPort, 'POST', '/send/7', 'over tls')).json).toMatchObject({ delivered: 1 }); return true; });
      await until('the message over TLS', () => { expect(stream.messages).toContain('over tls'); return true; });
      const user = readCreds(credsFile(cluster.natsDir, 'backend'));
      const right = await NatsClient.connect([cluster.nats], { name: 'test', persistent: false, user, ca: readFileSync(join(cluster.natsDir, 'ca.pem')) });
      await right.close();

      const wrongCa = makeTlsFiles(tempDir(), [HOST]).ca;
      const admin = await runCli(['admin', 'drain', cluster.edges[0].id, '--nats', cluster.nats, '--nats-creds', credsFile(cluster.natsDir, 'admin'), '--nats-ca', wrongCa]);
      expect(admin.code).not.toBe(0);
      expect(admin.stderr).toMatch(/cannot connect to NATS at .*: TLS: (unable to verify the first certificate|self-signed certificate)/);
      // nats:// to a server that requires TLS: upgraded, checked against the system's CAs, refused; for good, not retried.
      const plainUrl = cluster.nats.replace('tls://', 'nats://');
      await expect(NatsClient.connect([plainUrl], { name: 'test', persistent: true, user })).rejects.toThrow(NatsFatalError);
    } finally {
      stream.close();
      await stopChild(cluster.child);
    }
    // tls:// to a server without TLS.
    const port = await freePort(HOST);
    const plain = await spawnNatsServer(HOST, port);
    try {
      await expect(NatsClient.connect([`tls://${HOST}:${port}`], { name: 'test', persistent: true })).rejects.toThrow(/does not offer TLS, and the URL asks for it/);
    } finally {
      await stopChild(plain);
    }
  });
});

describe('a NATS cluster of two servers', () => {
  const servers: ChildProcess[] = [];
  afterAll(async () => {
    for (const s of servers) await stopChild(s, 'SIGKILL');
  });

  test('the client learns the other server from connect_urls and moves to it when its server enters lame duck mode', async () => {
    const [a, b, routeA, routeB] = await freePorts(HOST, 4);
    const member = (port: number, route: number, other: number) =>
      spawnNatsServer(HOST, port, ['--cluster_name', 'c1m', '--cluster', `nats://${HOST}:${route}`, '--routes', `nats://${HOST}:${other}`]);
    servers.push(await member(a, routeA, routeB), await member(b, routeB, routeA));
    const warnings: string[] = [];
    let reconnects = 0;
    // Given only server a.
    const client = await NatsClient.connect([`nats://${HOST}:${a}`], { name: 'test', persistent: true, warning: (m) => warnings.push(m), reconnected: () => reconnects++ });
    const listener = await NatsClient.connect([`nats://${HOST}:${b}`], { name: 'test', persistent: false });
    try {
      const got: string[] = [];
      client.subscribe('after.ldm', (data) => got.push(Buffer.from(data).toString()));
      // The routes between the two take a moment; a's INFO then names b.
      await until(
        'the probe after lame duck mode',
        async () => {
          listener.publish('after.ldm', Buffer.from('probe'));
          await settle(listener);
          expect(got).toContain('probe');
          return true;
        },
        10_000,
      );
      spawnSync('nats-server', ['--signal', `ldm=${servers[0].pid}`]);
      await until('the client to move to server b', () => { expect(client.server).toBe(`${HOST}:${b}`); return true; }, 10_000);
      expect(warnings.some((w) => w.includes('lame duck mode'))).toBe(true);
      expect(reconnects).toBe(1);
      // A round trip on the moved connection: b has then taken the subscriptions the client sent first on it.
      await settle(client);
      listener.publish('after.ldm', Buffer.from('on b'));
      await until('the message on b', () => { expect(got).toContain('on b'); return true; });
    } finally {
      await client.close();
      await listener.close();
    }
  });

  test("a subscriber's handler that throws is reported; later messages still arrive", async () => {
    const port = await freePort(HOST);
    servers.push(await spawnNatsServer(HOST, port));
    const warnings: string[] = [];
    const client = await NatsClient.connect([`nats://${HOST}:${port}`], { name: 'test', persistent: false, warning: (m) => warnings.push(m) });
    try {
      const got: string[] = [];
      client.subscribe('boom', (data) => {
        const text = Buffer.from(data).toString();
        if (text === 'throw') throw new Error('handler bug');
        got.push(text);
      });
      await settle(client);
      for (const text of ['throw', 'after']) client.publish('boom', Buffer.from(text));
      await until('the message after the handler threw', () => { expect(got).toEqual(['after']); return true; });
      expect(warnings.some((w) => w.includes('a handler of boom threw: Error: handler bug'))).toBe(true);
    } finally {
      await client.close();
    }
  });
});
