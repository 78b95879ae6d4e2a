/**
 * What a hostile stranger's tries at the configuration found (issue 26): an empty stream secret,
 * a state directory someone else planted files in, an edge sharing a port a server holds, and
 * errors that named nothing. Each case runs the real CLI (or the embedding API) as a user would.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lchownSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { startEdge } from '../cluster/edge.js';
import { MemoryBroker } from '../cluster/bus.js';
import { readCreds, writeNatsConfig } from '../cluster/nats-auth.js';
import { newNKeyUser } from '../cluster/nkeys.js';
import { freePort, spawnC1m, Supervisor, cliCommand } from '../cluster/supervisor.js';
import { spawnNatsServer } from '../loadgen/server-process.js';
import { openStore } from '../subsmanager/store.js';
import { runCli, spawnServer, startServer, StreamClient, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

const HOST = '127.0.0.1';
const SECRET = 'a stream secret of 32 bytes or more';
const silent = pino({ level: 'silent' });

const started: ChildProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((child) => stopChild(child, 'SIGINT', 5000)));
});

/**
 * Runs `c1m <args>` until it exits, or until it prints `ready` or is still running after
 * `patienceMs` (then it is stopped): a refused start must exit with its reason, and one that
 * starts anyway, or waits for a bus that is not there, must not leave the test hanging.
 */
function outcome(args: string[], ready: string, env: NodeJS.ProcessEnv = {}, patienceMs = 30_000): Promise<{ code: number | 'started' | 'still running'; output: string }> {
  return new Promise((resolve) => {
    const child = spawnC1m(args, { env: { ...process.env, ...env } });
    let output = '';
    let stopped: 'started' | 'still running' | undefined;
    const stop = (why: 'started' | 'still running') => {
      stopped ??= why;
      void stopChild(child, 'SIGINT', 5000);
    };
    const timer = setTimeout(() => stop('still running'), patienceMs);
    const onData = (d: Buffer) => {
      output += d;
      if (output.includes(ready)) stop('started');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code: stopped ?? code ?? -1, output });
    });
  });
}

describe('a stream secret shorter than 32 bytes is refused at start (item 2)', () => {
  it('by start() and startEdge(), embedded: empty, or one byte short', async () => {
    for (const secret of ['', SECRET.slice(0, 31)]) {
      await expect(startServer({ streamSecret: secret })).rejects.toThrow(/at least 32 random bytes, e\.g\. .*openssl rand -base64 32/);
      const bus = new MemoryBroker().connect();
      await expect(startEdge({ bus, id: 'e0', host: HOST, port: 0, streamSecret: secret, logger: silent })).rejects.toThrow(/at least 32 random bytes/);
      await bus.close();
    }
    const c1m = await startServer({ streamSecret: SECRET.slice(0, 32) });
    c1m.close();
  });

  it('by c1m token: an empty C1M_STREAM_SECRET mints nothing', async () => {
    const run = await runCli(['token', '1'], { env: { C1M_STREAM_SECRET: '' } });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/stream secret .* is 0 bytes: it needs at least 32 random bytes, e\.g\. --stream-secret "\$\(openssl rand -base64 32\)"/);
  });

  it('by c1m server, c1m edge and c1m cluster, before they listen', async () => {
    const env = { C1M_STREAM_SECRET: '' };
    const server = await outcome(['server', '--host', HOST, '--port', '0', '--api-port', '0', '--db', ':memory:'], 'c1m listening', env);
    // The edge refuses before it connects to a bus: there is none here.
    const edge = await outcome(['edge', '--host', HOST, '--port', '0', '--nats', `${HOST}:${await freePort(HOST)}`, '--stream-secret', 'short'], 'c1m edge listening', {}, 10_000);
    const cluster = await outcome(['cluster', '--host', HOST, '--port', '0', '--api-port', '0', '--nats-port', '0', '--db', ':memory:', '--edges', '1'], 'c1m cluster ready', env);
    for (const run of [server, edge, cluster]) {
      expect(run.code).toBe(1);
      expect(run.output).toMatch(/at least 32 random bytes/);
    }
    expect(cluster.output).not.toContain('"role":"nats"'); // refused before it started anything
  });

  it('a secret long enough: the log says the streams need tokens', async () => {
    const server = await spawnServer(['--db', ':memory:'], { C1M_STREAM_SECRET: SECRET });
    started.push(server.child);
    expect(server.output()).toMatch(/"streamAuth":true/);
    await stopChild(server.child, 'SIGINT', 5000);
  });
});

const root = process.getuid?.() === 0;
const NOBODY = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim());
const NOGROUP = Number(spawnSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).stdout.trim());
const seedFile = (label: string) => `# planted: ${label}\n${newNKeyUser().seed}\n`;

/** A file as user nobody would have left it. */
function plant(file: string, text: string): void {
  writeFileSync(file, text, { mode: 0o600 });
  chownSync(file, NOBODY, NOGROUP);
}

describe.skipIf(!root)('a state directory or credentials someone else could have written are refused (item 3; needs root to make files as nobody)', () => {
  it("the stranger's attack: nobody's 0777 directory, nats.conf a link to a missing file, a planted router key and edge", async () => {
    const dir = tempDir();
    chmodSync(dir, 0o777);
    chownSync(dir, NOBODY, NOGROUP);
    const target = join(tempDir(), 'written-through-the-link');
    symlinkSync(target, join(dir, 'nats.conf'));
    lchownSync(join(dir, 'nats.conf'), NOBODY, NOGROUP);
    const plantedRouter = seedFile('router');
    plant(join(dir, 'router.creds'), plantedRouter);
    plant(join(dir, 'edge-evil.creds'), seedFile('evil'));
    const before = readdirSync(dir).sort();

    const run = await runCli(['nats-config', '--dir', dir, '--edges', 'e0']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`directory ${dir} belongs to user ${NOBODY}, not to this process's user 0`);
    expect(existsSync(target)).toBe(false);
    expect(readdirSync(dir).sort()).toEqual(before);
    expect(readFileSync(join(dir, 'router.creds'), 'utf8')).toBe(plantedRouter);

    // c1m cluster --state-dir is refused the same way, before nats-server starts.
    const cluster = await outcome(['cluster', '--host', HOST, '--port', '0', '--api-port', '0', '--nats-port', '0', '--db', ':memory:', '--edges', '1', '--state-dir', dir], 'c1m cluster ready');
    expect(cluster.code).toBe(1);
    expect(cluster.output).toContain(`directory ${dir} belongs to user ${NOBODY}`);
    expect(cluster.output).not.toContain('"role":"nats"');
    expect(existsSync(target)).toBe(false);
  });

  it('a directory of our own that others may write in', () => {
    const dir = tempDir();
    chmodSync(dir, 0o770);
    expect(() => writeNatsConfig(dir, { edges: ['e0'] })).toThrow(`directory ${dir} may be written by others (mode 770)`);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('in a directory of our own: nats.conf as a link, and a credentials file someone else owns', () => {
    const linked = tempDir();
    const target = join(tempDir(), 'missing');
    symlinkSync(target, join(linked, 'nats.conf'));
    expect(() => writeNatsConfig(linked, { edges: ['e0'] })).toThrow(`${join(linked, 'nats.conf')} is a symbolic link`);
    expect(existsSync(target)).toBe(false);

    const planted = tempDir();
    const text = seedFile('router');
    plant(join(planted, 'router.creds'), text);
    expect(() => writeNatsConfig(planted, { edges: ['e0'] })).toThrow(`${join(planted, 'router.creds')} belongs to user ${NOBODY}`);
    expect(readFileSync(join(planted, 'router.creds'), 'utf8')).toBe(text);
    expect(existsSync(join(planted, 'nats.conf'))).toBe(false);
  });

  it('--nats-creds (readCreds): a link, a file someone else owns, a file in a directory others may write in', async () => {
    const dir = tempDir();
    writeNatsConfig(dir, { edges: ['e0'] });
    const own = join(dir, 'edge-e0.creds');
    expect(readCreds(own).publicKey).toMatch(/^U/);

    const link = join(tempDir(), 'edge.creds');
    symlinkSync(own, link);
    expect(() => readCreds(link)).toThrow(`${link} is a symbolic link`);

    const theirs = join(tempDir(), 'edge.creds');
    plant(theirs, seedFile('edge'));
    expect(() => readCreds(theirs)).toThrow(`${theirs} belongs to user ${NOBODY}`);

    const shared = tempDir();
    chmodSync(shared, 0o777);
    writeFileSync(join(shared, 'edge.creds'), seedFile('own key, shared directory'), { mode: 0o600 });
    expect(() => readCreds(join(shared, 'edge.creds'))).toThrow(`directory ${shared} may be written by others`);

    // As the CLI meets it: c1m admin with planted credentials says why and sends nothing.
    const run = await runCli(['admin', 'drain', 'e0', '--nats', `${HOST}:${await freePort(HOST)}`, '--nats-creds', theirs]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`${theirs} belongs to user ${NOBODY}`);
  });
});

describe('an edge refuses a port held by anything but its sibling edges (item 7)', () => {
  it('c1m cluster and c1m edge on the port of a secured c1m server: refused, naming the port', async () => {
    // A port chosen here: the kernel lets no one share a port it picked itself (--port 0), with or without SO_REUSEPORT.
    const server = await spawnServer(['--port', String(await freePort(HOST)), '--api-port', String(await freePort(HOST)), '--db', ':memory:', '--history-seconds', '0'], { C1M_STREAM_SECRET: SECRET });
    started.push(server.child);
    const cluster = await outcome(['cluster', '--host', HOST, '--port', String(server.port), '--api-port', '0', '--nats-port', '0', '--db', ':memory:', '--edges', '1'], 'c1m cluster ready');
    expect(cluster.code).toBe(1);
    expect(cluster.output).toContain(`cannot listen for the edges' streams on ${HOST}:${server.port}: the port is already in use`);
    // Its routers would share the server's API port the same way.
    const routers = await outcome(['cluster', '--host', HOST, '--port', '0', '--api-port', String(server.apiPort), '--nats-port', '0', '--db', ':memory:', '--edges', '1'], 'c1m cluster ready');
    expect(routers.code).toBe(1);
    expect(routers.output).toContain(`cannot listen for the backend API on 127.0.0.1:${server.apiPort}: the port is already in use`);

    const natsPort = await freePort(HOST);
    const nats = await spawnNatsServer(HOST, natsPort);
    started.push(nats);
    const edge = await outcome(['edge', '--id', 'e0', '--host', HOST, '--port', String(server.port), '--nats', `${HOST}:${natsPort}`], 'c1m edge listening');
    expect(edge.code).toBe(1);
    expect(edge.output).toContain(`cannot listen for edge e0's streams on ${HOST}:${server.port}: the port is already in use`);

    // The server alone still answers every stream request: 401 without a token, each time.
    for (let i = 0; i < 4; i++) expect((await fetch(`http://${HOST}:${server.port}/test/1`)).status).toBe(401);

    // An edge told it joins siblings shares the port (as c1m cluster's edges do).
    const sibling = await outcome(['edge', '--id', 'e1', '--host', HOST, '--port', String(server.port), '--nats', `${HOST}:${natsPort}`, '--share-port'], 'c1m edge listening');
    expect(sibling.code).toBe('started');
    await stopChild(nats, 'SIGTERM', 5000);
    await stopChild(server.child, 'SIGINT', 5000);
  });
});

describe('errors name the file, the port, the reason (item 14)', () => {
  it('a corrupt store or history: the path, and what to do', async () => {
    const dir = tempDir();
    const store = join(dir, 'c1m.db');
    openStore(store).close();
    writeFileSync(join(dir, 'c1m.history.db'), 'not a database at all, but long enough to be read as one '.repeat(100));
    const history = await outcome(['server', '--host', HOST, '--port', '0', '--api-port', '0', '--db', store], 'c1m listening');
    expect(history.code).toBe(1);
    expect(history.output).toContain(`cannot open message history ${join(dir, 'c1m.history.db')}: file is not a database (SQLITE_NOTADB)`);
    expect(history.output).toContain('move it (with its -wal and -shm files) away');

    writeFileSync(store, 'garbage '.repeat(1000));
    const corrupt = await outcome(['subs', 'get', '1', '--db', store], 'subscribers');
    expect(corrupt.code).toBe(1);
    expect(corrupt.output).toContain(`cannot open subscription store ${store}: file is not a database (SQLITE_NOTADB)`);
  });

  it.skipIf(!root)('a history this user may not write (run as nobody): the path, the user, what to do (needs root to switch users)', async () => {
    const dir = tempDir();
    const store = join(dir, 'c1m.db');
    const c1m = await startServer({ db: store, historySeconds: 60 });
    c1m.close();
    chownSync(dir, NOBODY, NOGROUP);
    for (const file of readdirSync(dir)) if (file !== 'c1m.history.db') chownSync(join(dir, file), NOBODY, NOGROUP);
    chmodSync(join(dir, 'c1m.history.db'), 0o644); // root's, readable by all
    const c1mServer = cliCommand(['server', '--host', HOST, '--port', '0', '--api-port', '0', '--db', store]);
    const run = spawnSync('setpriv', ['--reuid', String(NOBODY), '--regid', String(NOGROUP), '--clear-groups', c1mServer.command, ...c1mServer.args], { encoding: 'utf8', timeout: 30_000 });
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(`cannot open message history ${join(dir, 'c1m.history.db')}`);
    expect(run.stderr).toContain(`this process (user ${NOBODY}) cannot write it`);
  });

  it('--partitions out of range, or without a history to number in: refused, saying why', async () => {
    const nats = ['--nats', `${HOST}:${await freePort(HOST)}`, '--api-port', '0', '--db', join(tempDir(), 'c1m.db')];
    const runs = await Promise.all([
      outcome(['router', ...nats, '--partitions', '0'], 'c1m router listening'),
      outcome(['router', ...nats, '--partitions', '65'], 'c1m router listening'),
      outcome(['router', ...nats, '--partitions', '2', '--history-seconds', '0'], 'c1m router listening', {}, 10_000),
    ]);
    expect(runs.map((r) => r.code)).toEqual([1, 1, 1]);
    expect(runs[0].output).toContain('partitions must be an integer >= 1');
    expect(runs[1].output).toContain('partitions must be at most 64');
    expect(runs[2].output).toContain('--partitions share the numbering of sends among routers: they need a history');
  });

  it('the NATS port taken: the cluster tells nats-server\'s own reason, not "install nats-server"', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, HOST, resolve));
    const natsPort = (holder.address() as net.AddressInfo).port;
    const run = await outcome(['cluster', '--host', HOST, '--port', '0', '--api-port', '0', '--nats-port', String(natsPort), '--db', ':memory:', '--edges', '1'], 'c1m cluster ready');
    holder.close();
    expect(run.code).toBe(1);
    expect(run.output).toMatch(/"err":"nats exited \(1\) before it was ready: .*address already in use/);
    expect(run.output).not.toContain('install nats-server');
  });

  it('an edge whose port is taken: the supervisor says why it exited', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, HOST, resolve));
    const port = (holder.address() as net.AddressInfo).port;
    const natsPort = await freePort(HOST);
    const nats = await spawnNatsServer(HOST, natsPort);
    started.push(nats);
    const supervisor = new Supervisor();
    try {
      const edge = supervisor.start({ name: 'edge-0', role: 'edge', ...cliCommand(['edge', '--id', 'e0', '--host', HOST, '--port', String(port), '--nats', `${HOST}:${natsPort}`]), readyWhen: (line) => line.includes('c1m edge listening') });
      await expect(edge).rejects.toThrow(`edge-0 exited (1) before it was ready: c1m: cannot listen for edge e0's streams on ${HOST}:${port}: the port is already in use`);
    } finally {
      // It would restart the edge: stopped here whatever the outcome.
      await supervisor.stop(5000);
      holder.close();
    }
  });

  it('the --demo banner of a secured server prints commands that work: a minted stream token, the API header', async () => {
    const server = await spawnServer(['--demo', '--db', join(tempDir(), 'c1m.db')], { C1M_STREAM_SECRET: SECRET, C1M_TOKEN: 'api token' });
    started.push(server.child);
    await until('the demo banner', () => server.output().includes('User 1 receives'));
    const path = new RegExp(`curl -N '127\\.0\\.0\\.1:${server.port}(/test/1\\?token=[^']+)'`).exec(server.output())?.[1];
    expect(path).toBeDefined();
    const stream = await StreamClient.open(server.port, path!.slice('/test/'.length));
    expect(stream.status).toBe(200);
    expect(server.output()).toContain(`curl -X POST -H "Authorization: Bearer $C1M_TOKEN" 127.0.0.1:${server.apiPort}/send/2 -d hi`);
    const sent = await fetch(`http://127.0.0.1:${server.apiPort}/send/2`, { method: 'POST', body: 'hi', headers: { authorization: 'Bearer api token' } });
    expect(sent.status).toBe(200);
    await until('"hi" on user 1\'s stream', () => stream.messages.includes('hi'));
    stream.close();
    await stopChild(server.child, 'SIGINT', 5000);
  });
});
