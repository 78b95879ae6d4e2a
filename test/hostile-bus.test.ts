/**
 * The bus and the ways a send comes in, as a hostile process holding one
 * role's real credentials would try them (issue 26 items 1, 5, 6; issue 31):
 * one edge speaking for another, malformed messages, sends and pairs out of
 * range on every way in, a drain on an edge's delivery subject, and every
 * role's rights on a live nats-server against the threat model's table (docs/security.md).
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packChunks } from '../cluster/deliver-batch.js';
import { decode, encode, SUBJECTS, whyNotBusMessage, type BusMessage } from '../cluster/messages.js';
import { credsFile, permissions, readCreds, writeNatsConfig, type BusRole } from '../cluster/nats-auth.js';
import { NatsClient } from '../cluster/nats.js';
import { MANIFEST_SUBJECT, SNAPSHOT_STREAM, SNAPSHOT_SUBJECT } from '../cluster/store-snapshot.js';
import { freePort } from '../cluster/supervisor.js';
import { spawnCluster, spawnNatsServer, type ClusterProcess } from '../loadgen/server-process.js';
import { SendError } from '../router/router.js';
import { api, openStream, received, runCli, startServer, StreamClient, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

const HOST = '127.0.0.1';

/** Any value as a bus payload: what a hostile client can put on the wire. */
const raw = (value: object) => encode(value as BusMessage);

const stats0 = { pid: 1, state: 'up', streams: 0, capacity: 100, chunks: 0, bytes: 0, slowConsumerCloses: 0, authFailures: 0, rss: 0 };

async function clientAs(url: string, creds: string, errors: string[] = []): Promise<NatsClient> {
  return NatsClient.connect([url], { name: 'test-hostile', persistent: false, user: readCreds(creds), warning: (m) => errors.push(m) });
}

describe('c1m cluster: a hostile edge, router or backend on the bus', () => {
  let cluster: ClusterProcess;
  let stream: StreamClient;
  let attacker: string;
  let victim: string;
  const routerStats = async () => (await api(cluster.apiPort, 'GET', '/stats')).json;

  beforeAll(async () => {
    cluster = await spawnCluster(['--edges', '2', '--db', ':memory:', '--port-per-edge', '--edge-id-prefix', 'h']);
    [attacker, victim] = cluster.edges.map((e) => e.id);
    // User 5's stream is on the victim edge.
    stream = await StreamClient.open(cluster.edges[1].port!, 5);
    await until("the router to count the victim's stream", async () => { expect((await routerStats()).edges.find((e: { id: string }) => e.id === victim).directoryStreams).toBe(1); return true; });
  });

  afterAll(async () => {
    stream?.close();
    if (cluster) await stopChild(cluster.child);
  });

  test("an edge's credentials cannot make the router forget another edge's users; a malformed status is counted and dropped, /metrics stays up", async () => {
    const errors: string[] = [];
    const edge = await clientAs(cluster.nats, credsFile(cluster.natsDir, 'edge', attacker), errors);
    try {
      const forget = { t: 'state', edge: victim, boot: 'fake', seq: 0, part: 0, last: true, users: [], stats: stats0 };
      // On the victim's subject: refused by nats-server.
      edge.publish(SUBJECTS.presence(victim), raw(forget));
      // On its own subject, naming the victim in the body: the router takes the subject's edge, the attacker's own.
      edge.publish(SUBJECTS.presence(attacker), raw(forget));
      // The malformed status that made /metrics answer 500; published last, it is the sentinel: once counted, the router has read the rest.
      edge.publish(SUBJECTS.presence(attacker), raw({ t: 'status', edge: 'zz', boot: 'b', seq: 1 }));
      await until('the malformed message counted', async () => { expect((await routerStats()).busMalformed).toBe(1); return true; });
      // nats-server's refusal reaches the attacker on its own connection, in its own time: waited for, not raced.
      await until('the refusal of the victim\'s subject', () => { expect(errors).toContain(`NATS server: Permissions Violation for Publish to "${SUBJECTS.presence(victim)}"`); return true; });
      const metrics = await api(cluster.apiPort, 'GET', '/metrics');
      expect(metrics.status).toBe(200);
      expect(metrics.text).toMatch(/^c1m_bus_malformed_total 1$/m);
      expect((await routerStats()).edges.map((e: { id: string }) => e.id).sort()).toEqual([attacker, victim].sort());
      expect((await api(cluster.apiPort, 'POST', '/send/5', 'still here')).json).toMatchObject({ delivered: 1 });
      await until('the message after', () => { expect(stream.messages).toContain('still here'); return true; });
    } finally {
      await edge.close();
    }
  });

  test('a send over the bus outside the limits gets a sent reply with an error, and nothing is numbered, kept or delivered', async () => {
    const backend = await clientAs(cluster.nats, credsFile(cluster.natsDir, 'backend'));
    try {
      const before = await routerStats();
      const bad: [object, RegExp][] = [
        [{ user: 0, message: 'x' }, /not a user id: 0/],
        [{ user: -1, message: 'x' }, /not a user id: -1/],
        [{ user: 1e30, message: 'x' }, /not a user id: 1e\+30/],
        [{ user: 1.5, message: 'x' }, /not a user id: 1\.5/],
        [{ user: '5', message: 'x' }, /not a user id: "5" \(a user id is a number; as text, user:5\)/],
        [{ user: 'Photo:5', message: 'x' }, /not a subject: "Photo:5"/],
        [{ user: { kind: 'photo' }, message: 'x' }, /not a c1m bus message: a send with a missing or bad user/],
        [{ user: 2_000_000, message: 'x' }, /user id 2000000 is above the limit of 1000000/],
        [{ user: 5, message: '' }, /empty message/],
        [{ user: 5, message: new Uint8Array(0) }, /empty message/],
        [{ user: 5, message: 'x'.repeat(64 * 1024 + 1) }, /over --max-message/],
        [{ user: 5, message: 12345 }, /not a c1m bus message: a send with a missing or bad message/],
        [{ user: 5 }, /not a c1m bus message: a send with a missing or bad message/],
      ];
      for (const [fields, error] of bad) {
        const reply = decode(await backend.request(SUBJECTS.send, raw({ t: 'send', ...fields }), 5000));
        expect(reply, JSON.stringify(fields).slice(0, 80)).toEqual({ t: 'sent', delivered: 0, error: expect.stringMatching(error) });
      }
      const after = await routerStats();
      expect(after.sends).toBe(before.sends);
      expect(after.history.lastId).toBe(before.history.lastId);
      // A sentinel through the same way in: the only thing the stream got since.
      const seen = stream.messages.length;
      const ok = decode(await backend.request(SUBJECTS.send, raw({ t: 'send', user: 5, message: 'sentinel' }), 5000));
      expect(ok).toMatchObject({ t: 'sent', delivered: 1, id: expect.any(Number) });
      expect((ok as { id: number }).id).toBeGreaterThan(after.history.lastId);
      await until('the sentinel', () => { expect(stream.messages.slice(seen)).toEqual(['sentinel']); return true; });
      // A topic is a subject over the bus too (in the field named user): it reaches the topic's subscribers.
      expect((await api(cluster.apiPort, 'POST', '/subscriptions', JSON.stringify([[5, 'photo:789']]))).json).toEqual({ added: 1 });
      const comment = decode(await backend.request(SUBJECTS.send, raw({ t: 'send', user: 'photo:789', message: 'a comment' }), 5000));
      expect(comment).toMatchObject({ t: 'sent', delivered: 1, id: expect.any(Number) });
      await until('the sentinel and the comment', () => { expect(stream.messages.slice(seen)).toEqual(['sentinel', 'a comment']); return true; });
    } finally {
      await backend.close();
    }
  });

  test('a resume from an id that is no id, through an edge, is told lost unknown (its replay request is one of ours)', async () => {
    const malformed = (await routerStats()).busMalformed;
    const client = await openStream('sse', cluster.edges[1].port!, 6, '?lastEventId=abc');
    try {
      await until('the lost notice', () => { expect(received(client)).toEqual(['lost unknown']); return true; });
      expect((await routerStats()).busMalformed).toBe(malformed);
    } finally {
      client.close();
    }
  });

  test("a drain on an edge's delivery subject (a router's credentials) does not drain it", async () => {
    const router = await clientAs(cluster.nats, credsFile(cluster.natsDir, 'router'));
    try {
      const snapshots: Extract<BusMessage, { t: 'state' }>[] = [];
      router.subscribe(SUBJECTS.presence(victim), (data) => {
        const message = decode(data);
        if (message.t === 'state') snapshots.push(message);
      });
      router.publish(SUBJECTS.edge(victim), raw({ t: 'drain', rate: 1000 }));
      // The edge takes its subject's messages in order: the snapshots it sends for these syncs show its state after the drain
      // (two, so that one the router asked for meanwhile cannot stand in for both).
      router.publish(SUBJECTS.edge(victim), raw({ t: 'sync' }));
      router.publish(SUBJECTS.edge(victim), raw({ t: 'sync' }));
      await until('two whole snapshots', () => { expect(snapshots.filter((s) => s.last).length).toBeGreaterThanOrEqual(2); return true; });
      for (const snapshot of snapshots) expect(snapshot).toMatchObject({ users: [5], stats: { state: 'up' } });
      expect(stream.ended).toBe(false);
    } finally {
      await router.close();
    }
  });

  test("a torn deliver batch on an edge's subject (a router's credentials) is refused whole: not even its first chunk, which fits, reaches the stream", async () => {
    const router = await clientAs(cluster.nats, credsFile(cluster.natsDir, 'router'));
    try {
      const seen = stream.messages.length;
      const torn = packChunks([Buffer.from('first of a torn batch\n'), Buffer.from('second of it\n')], [[5], [5]], [Date.now(), Date.now()], []).chunks;
      router.publish(SUBJECTS.edge(victim), raw({ t: 'deliver', chunks: torn.subarray(0, -1) }));
      // The edge takes its subject's messages in order: once the whole batch after it is written, the torn one was read.
      router.publish(SUBJECTS.edge(victim), raw({ t: 'deliver', ...packChunks([Buffer.from('whole\n')], [[5]], [Date.now()], []) }));
      await until('the whole message', () => { expect(stream.messages.slice(seen)).toEqual(['whole']); return true; });
      expect(stream.ended).toBe(false);
    } finally {
      await router.close();
    }
  });
});

describe('the bus messages validator', () => {
  const stats = { ...stats0, transports: { chunked: { open: 0, chunks: 0, bytes: 0, slowConsumerCloses: 0, authFailures: 0 } } };
  const latency = { counts: new Array(15).fill(0), sum: 0 };
  const bytes = Buffer.from('x');
  const batch = packChunks([bytes], [[1]], [1], []).chunks;
  const good: object[] = [
    { t: 'presence', boot: 'b', seq: 1, in: [1], out: [] },
    { t: 'status', boot: 'b', seq: 1, stats: stats0, latency },
    { t: 'sync' },
    { t: 'state', boot: 'b', seq: 1, part: 0, last: true, users: [1, 1], stats: stats0 },
    { t: 'deliver', ...packChunks([bytes], [[1]], [1.5], [7]), run: 'r', batch: 1, term: 2 },
    { t: 'deliver', ...packChunks([bytes, bytes], [['photo:1', 2], [2 ** 40]], [1, 2], []) },
    { t: 'deliver', ...packChunks([], [], [], []) },
    { t: 'stopped', run: 'r', batch: 1 },
    { t: 'drain' },
    { t: 'drain', rate: 10 },
    { t: 'undrain' },
    { t: 'send', user: 1, message: 'x' },
    { t: 'sent', delivered: 0, error: 'why' },
    { t: 'sent', delivered: 1, id: 5, partitions: 2 },
    { t: 'replay', user: 1, after: 0, budget: 100 },
    { t: 'replay', user: 1, after: -1, budget: 32768.5 },
    { t: 'replayed', ids: [1], bodies: [bytes], more: false, lost: 'unknown' },
    { t: 'leading', router: 'host:1:abc', partitions: 0 },
  ];
  const bad: [object, RegExp][] = [
    [{ t: 'nope' }, /unknown type "nope"/],
    [{ edge: 'e' }, /unknown type undefined/],
    [{ t: 'presence', boot: 'b', seq: 1, in: [0], out: [] }, /presence with a missing or bad in/],
    [{ t: 'presence', boot: 'b', seq: -1, in: [], out: [] }, /bad seq/],
    [{ t: 'status', boot: 'b', seq: 1, stats: { ...stats, transports: { chunked: {} } }, latency }, /status with a missing or bad stats/],
    [{ t: 'status', boot: 'b', seq: 1, stats: { ...stats0, state: 'gone' }, latency }, /bad stats/],
    [{ t: 'status', boot: 'b', seq: 1, stats: stats0, latency: { counts: [1], sum: 0 } }, /bad latency/],
    [{ t: 'state', boot: 'b', seq: 1, part: 0, last: 'yes', users: [], stats: stats0 }, /bad last/],
    [{ t: 'deliver', chunks: batch.subarray(0, -1) }, /a deliver: its chunks do not fit its bytes/],
    [{ t: 'deliver', chunks: Buffer.concat([batch, bytes]) }, /a deliver: its chunks do not fit its bytes/],
    [{ t: 'deliver', chunks: Buffer.from([0, 0, 0, 0, 4]) }, /a deliver: its header is not one/],
    [{ t: 'deliver', chunks: Buffer.from([1, 0, 0]) }, /a deliver: its header is not one/],
    [{ t: 'deliver', chunks: [bytes] }, /a deliver with a missing or bad chunks/],
    [{ t: 'deliver', ...packChunks([bytes], [[1]], [1], [1.5]) }, /a deliver: chunk 0 has a bad id/],
    [{ t: 'deliver', ...packChunks([bytes, bytes], [[1], [0]], [1, 1], []) }, /a deliver: chunk 1 has a bad user id/],
    [{ t: 'deliver', ...packChunks([bytes], [[1]], [NaN], []) }, /a deliver: chunk 0 has a bad sentAt/],
    [{ t: 'deliver', chunks: packChunks([bytes], [['photo:1', 2]], [1], []).chunks }, /a deliver: chunk 0 names topic 1 of 0/],
    [{ t: 'deliver', chunks: packChunks([bytes], [['photo:1', 2]], [1], []).chunks, topics: ['Photo:1'] }, /a deliver with a missing or bad topics/],
    [{ t: 'stopped', run: 'r' }, /bad batch/],
    [{ t: 'drain', rate: -1 }, /bad rate/],
    [{ t: 'send', user: 1 }, /bad message/],
    [{ t: 'sent', delivered: '1' }, /bad delivered/],
    [{ t: 'sent', delivered: 1, partitions: 0 }, /bad partitions/],
    [{ t: 'leading', router: 'r', partitions: -1 }, /bad partitions/],
    [{ t: 'leading', partitions: 1 }, /bad router/],
    [{ t: 'replay', user: 1, after: 0, budget: -1 }, /bad budget/],
    [{ t: 'replay', user: 1, after: 1.5, budget: 1 }, /bad after/],
    [{ t: 'replayed', ids: [1], bodies: [], more: false }, /ids and bodies differ in length/],
    [{ t: 'replayed', ids: [], bodies: [], more: false, lost: 'gone' }, /bad lost/],
  ];

  test('takes every type of the union, and refuses each with a bad field, saying which', () => {
    for (const message of good) expect(whyNotBusMessage(message), JSON.stringify(message)).toBeUndefined();
    for (const [message, why] of bad) expect(whyNotBusMessage(message), JSON.stringify(message)).toMatch(why);
    expect(() => decode(encode({ t: 'status', edge: 'zz', boot: 'b', seq: 1 } as never))).toThrow(/not a c1m bus message: a status with a missing or bad stats/);
  });
});

describe('c1m cluster without a history', () => {
  test('a stream resuming through an edge, with no router keeping a history (no responders), is told lost unknown', async () => {
    const cluster = await spawnCluster(['--edges', '1', '--db', ':memory:', '--history-seconds', '0']);
    const client = await openStream('sse', cluster.port, 41, '?lastEventId=12');
    try {
      await until('the lost notice', () => { expect(received(client)).toEqual(['lost unknown']); return true; });
    } finally {
      client.close();
      await stopChild(cluster.child);
    }
  });
});

describe('one check of a send and of pairs, on every way in', () => {
  test('HTTP: 400 for a user out of range or an empty message, 413 over --max-message; embedded: router.send throws a SendError; nothing is counted', async () => {
    const c1m = await startServer({ maxUserId: 1000, maxMessage: 100, historySeconds: 60 });
    const before = c1m.stats();
    try {
      for (const [path, body, status, error] of [
        ['/send/0', 'x', 400, /not a user id/],
        ['/send/1001', 'x', 400, /user id 1001 is above the limit of 1000/],
        ['/send/5', '', 400, /empty message/],
        ['/send/5', 'x'.repeat(101), 413, /larger than 100 bytes|over --max-message/],
      ] as const) {
        const answer = await api(c1m.apiPort, 'POST', path, body);
        expect(answer, `${path} ${body.length}`).toMatchObject({ status, json: { error: expect.stringMatching(error) } });
      }
      for (const [user, message, error] of [
        [0, 'x', /not a user id: 0/],
        [-1, 'x', /not a user id: -1/],
        [1e30, 'x', /not a user id: 1e\+30/],
        ['2', 'x', /not a user id: "2"/],
        [1001, 'x', /above the limit of 1000/],
        [5, '', /empty message/],
        [5, 'x'.repeat(101), /a message of 101 bytes is over --max-message \(100\)/],
        [5, 12345, /a message is bytes or a string, not number/],
        [5, undefined, /a message is bytes or a string, not missing/],
      ] as const) {
        expect(() => c1m.router.send(user as number, message as string), String(user)).toThrow(SendError);
        expect(() => c1m.router.send(user as number, message as string)).toThrow(error);
      }
      expect(c1m.stats()).toMatchObject({ sends: 0, history: { lastId: before.history!.lastId } });
      expect(c1m.router.send(5, 'fine')).toBe(0);
    } finally {
      c1m.close();
    }
  });

  test('pairs and lookups above --max-user-id: 400 and nothing changed, over HTTP and c1m subs add', async () => {
    const db = join(tempDir(), 'c1m.db');
    const c1m = await startServer({ db, maxUserId: 1000, historySeconds: 0 });
    try {
      expect((await api(c1m.apiPort, 'POST', '/subscriptions', '[[2,1]]')).json).toEqual({ added: 1 });
      for (const method of ['POST', 'DELETE']) {
        for (const pairs of ['[[1001,1]]', '[[2,1],[1,2000000]]', '[[2,1],[1,99999999999]]']) {
          const answer = await api(c1m.apiPort, method, '/subscriptions', pairs);
          expect(answer, `${method} ${pairs}`).toMatchObject({ status: 400, json: { error: expect.stringMatching(/above the limit of 1000/) } });
        }
      }
      expect((await api(c1m.apiPort, 'GET', '/subscribers/1')).json).toEqual([2]);
      expect((await api(c1m.apiPort, 'GET', '/subscriptions/2')).json).toEqual([1]);
      for (const path of ['/subscribers/99999999999', '/subscriptions/1001']) {
        expect(await api(c1m.apiPort, 'GET', path), path).toMatchObject({ status: 400, json: { error: expect.stringMatching(/above the limit of 1000/) } });
      }
    } finally {
      c1m.close();
    }
    const cli = await runCli(['subs', 'add', '2:1', '2000000:1', '--db', db]);
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/pair 1 .*user id 2000000 is above the limit of 1000000/);
    expect((await runCli(['subs', 'get', '1', '--db', db])).stdout).toBe('{"user":1,"subscribers":[2],"subscriptions":[]}\n');
  });
});

/** NATS's subject matching: `*` one token, `>` the rest. */
function matches(pattern: string, subject: string): boolean {
  const want = pattern.split('.');
  const got = subject.split('.');
  for (let i = 0; i < want.length; i++) {
    if (want[i] === '>') return got.length > i;
    if (want[i] !== '*' && want[i] !== got[i]) return false;
  }
  return want.length === got.length;
}

/** The threat model's table of the bus's users (docs/security.md): per role, the subjects it may publish and subscribe to, and whether it may reply. */
function documentedRights(): Map<BusRole, { publish: string[]; subscribe: string[]; replies: boolean }> {
  const doc = readFileSync(new URL('../docs/security.md', import.meta.url), 'utf8');
  const rights = new Map<BusRole, { publish: string[]; subscribe: string[]; replies: boolean }>();
  const subjects = (cell: string) => [...cell.matchAll(/`((?:c1m|_INBOX|\$JS|\$KV)[^`]*)`/g)].map((m) => m[1]);
  for (const line of doc.split('\n')) {
    const file = /^\| `(edge-<id>|router|backend|admin)\.creds` \|/.exec(line)?.[1];
    if (!file) continue;
    const [, , publish, subscribe] = line.split(' | ');
    rights.set(file === 'edge-<id>' ? 'edge' : (file as BusRole), { publish: subjects(publish), subscribe: subjects(subscribe), replies: /\breply\b/.test(publish) });
  }
  return rights;
}

describe("every role's rights on the bus, as the threat model's table says", () => {
  const EDGE = 'e1';
  const OTHER = 'e2';
  const rights = documentedRights();
  const asEdge = (subjects: string[]) => subjects.map((s) => s.replaceAll('<id>', EDGE));

  test('the table lists the four roles exactly as cluster/nats-auth.ts permits them', () => {
    expect([...rights.keys()].sort()).toEqual(['admin', 'backend', 'edge', 'router']);
    for (const [role, documented] of rights) {
      const granted = permissions(role, EDGE);
      expect(asEdge(documented.publish).sort(), `${role} publish`).toEqual([...granted.publish.allow].sort());
      expect(asEdge(documented.subscribe).sort(), `${role} subscribe`).toEqual([...granted.subscribe.allow].sort());
      expect(documented.replies, `${role} replies`).toBe(granted.allow_responses !== undefined);
    }
  });

  test('nats-server allows each role what the table lists and refuses everything else', async () => {
    const dir = tempDir();
    const port = await freePort(HOST);
    const server = await spawnNatsServer(HOST, port, ['-c', writeNatsConfig(dir, { listen: `${HOST}:${port}`, edges: [EDGE, OTHER] })]);
    const url = `nats://${HOST}:${port}`;
    const everySubject = [
      ...[EDGE, OTHER].flatMap((id) => [SUBJECTS.presence(id), SUBJECTS.edge(id), SUBJECTS.admin(id), `_INBOX_EDGE.${id}.x`]),
      'c1m.presence',
      SUBJECTS.sync,
      SUBJECTS.send,
      SUBJECTS.sendIn(0),
      SUBJECTS.replay,
      SUBJECTS.replayIn(0),
      SUBJECTS.routers,
      '_INBOX.x',
      '_INBOX_ROUTER.x',
      '$JS.API.INFO',
      '$KV.c1m-leases.p0',
      'c1m.brain.store',
      // A store snapshot: its chunks and manifest (a forged one would point new views at other bytes), reading one back, and the purge of the store's stream up to it.
      SNAPSHOT_SUBJECT,
      MANIFEST_SUBJECT,
      `$JS.API.STREAM.MSG.GET.${SNAPSHOT_STREAM}`,
      '$JS.API.STREAM.PURGE.C1M_STORE',
    ];
    try {
      for (const [role, documented] of rights) {
        const errors: string[] = [];
        const client = await NatsClient.connect([url], { name: `test-${role}`, persistent: false, user: readCreds(credsFile(dir, role, EDGE)), warning: (m) => errors.push(m) });
        try {
          for (const subject of everySubject) {
            client.publish(subject, raw({ t: 'sync' }));
            client.subscribe(subject, () => undefined);
          }
          // Nobody may publish here: its refusal, the last, says every earlier one has come back.
          client.publish('c1m.nobody', raw({ t: 'sync' }));
          await until('the server to refuse the publish', () => { expect(errors).toContain('NATS server: Permissions Violation for Publish to "c1m.nobody"'); return true; });
          for (const subject of everySubject) {
            const mayPublish = asEdge(documented.publish).some((p) => matches(p, subject));
            const maySubscribe = asEdge(documented.subscribe).some((p) => matches(p, subject));
            expect(errors.includes(`NATS server: Permissions Violation for Publish to "${subject}"`), `${role} publish ${subject}`).toBe(!mayPublish);
            expect(errors.includes(`NATS server: Permissions Violation for Subscription to "${subject}"`), `${role} subscribe ${subject}`).toBe(!maySubscribe);
          }
        } finally {
          await client.close();
        }
      }
    } finally {
      await stopChild(server);
    }
  });
});
