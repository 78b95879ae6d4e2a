/**
 * The replicated subscription store (cluster/store-log.ts) at the friends graph's size: the bulk load of
 * 1M users x m=15 into the store's stream on R clustered nats-servers (`c1m friends load --nats`, timed as
 * a user runs it), the stream's size, then an empty view's rebuild from the stream, alternating the two ways
 * a view may apply a bulk load: consecutive messages together through the bulk loader's fast path (the
 * default), or each message alone.
 *
 *   node dist/bench/storelog.js [--users N] [--m M] [--replicas R] [--rounds K] [--dir DIR]
 *
 * With --serving, instead: the same load into a cluster already serving, a `c1m router --replicas R` (a
 * history too) on new nats-servers each run, its lookups asked one at a time throughout (GET /subscribers of a
 * random user): the longest answer is about the router's longest event-loop stall. `--before CLI` (another
 * build's dist/cli/c1m.js, e.g. the base commit's) alternates its router with this build's, round by round.
 *
 *   node dist/bench/storelog.js --serving [--before OTHER/dist/cli/c1m.js] [--users N] [--m M] [--replicas R] [--rounds K]
 *
 * With --snapshot, the rebuilds are from the whole stream (no snapshot) and from a snapshot of the view just
 * rebuilt (as `c1m friends snapshot` writes it, timed too), in turn, instead of together and alone.
 *
 * Defaults: 1,000,000 x 15, R = 3, 1 round, files under ./bench-results/storelog/
 * (removed at the end, but for the graph, kept for the next run).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { pino } from 'pino';
import { connectJetStream } from '../cluster/jetstream.js';
import { ROUTER_INBOX } from '../cluster/nats-auth.js';
import { openReplicatedStore, STORE_STREAM } from '../cluster/store-log.js';
import { copyView, publishSnapshot } from '../cluster/store-snapshot-write.js';
import { SNAPSHOT_STREAM } from '../cluster/store-snapshot.js';
import { c1mArgv, CLI, spawnC1m, stopChild } from '../cluster/supervisor.js';
import { spawnJetStreamServers, spawnRouter, type JetStreamServers } from '../loadgen/server-process.js';
import { longestAnswer } from './probe.js';

const { values: flags } = parseArgs({
  options: {
    users: { type: 'string', default: '1000000' },
    m: { type: 'string', default: '15' },
    replicas: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '1' },
    dir: { type: 'string', default: 'bench-results/storelog' },
    serving: { type: 'boolean', default: false },
    snapshot: { type: 'boolean', default: false },
    before: { type: 'string' },
  },
});
const dir = resolve(flags.dir);
const replicas = Number(flags.replicas);
mkdirSync(dir, { recursive: true, mode: 0o700 });

const c1m = (args: string[]): string => {
  const [node, ...rest] = c1mArgv(args);
  const run = spawnSync(node, rest, { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (run.status !== 0) throw new Error(`c1m ${args.join(' ')}: ${run.stderr || run.error?.message}`);
  return run.stdout;
};

/** Bytes under a directory, every file. */
function diskBytes(path: string): number {
  if (!existsSync(path)) return 0;
  const stats = statSync(path);
  if (!stats.isDirectory()) return stats.size;
  return readdirSync(path).reduce((sum, name) => sum + diskBytes(join(path, name)), 0);
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

const graph = join(dir, `graph-${flags.users}x${flags.m}.txt`);
if (!existsSync(graph)) c1m(['friends', 'generate', '--users', flags.users!, '--m', flags.m!, '--out', graph]);

const natsDir = join(dir, 'nats');
/** New nats-servers under natsDir for `run`, stopped and removed after it. */
async function onNewServers(run: (servers: JetStreamServers) => Promise<void>): Promise<void> {
  rmSync(natsDir, { recursive: true, force: true });
  mkdirSync(natsDir, { mode: 0o700 });
  const servers = await spawnJetStreamServers(replicas, natsDir);
  try {
    await run(servers);
  } finally {
    for (const { child } of servers.servers.values()) await stopChild(child);
    rmSync(natsDir, { recursive: true, force: true });
  }
}

if (flags.serving) {
  for (let round = 1; round <= Number(flags.rounds); round++) {
    const builds = flags.before ? (round % 2 ? [['before', flags.before], ['after', CLI]] : [['after', CLI], ['before', flags.before]]) : [['this build', CLI]];
    for (const [build, cli] of builds) await onNewServers((servers) => serving(servers, build, cli, round));
  }
} else await onNewServers(rebuilds);

/** A load into a serving router: how long its lookups wait, at most, until its view has applied the load. */
async function serving(servers: JetStreamServers, build: string, cli: string, round: number): Promise<void> {
  // The view and its history, new each run.
  const viewDir = join(dir, 'serving');
  rmSync(viewDir, { recursive: true, force: true });
  mkdirSync(viewDir, { mode: 0o700 });
  const db = join(viewDir, 'c1m.db');
  const router = await spawnRouter(['--nats', servers.urls, '--nats-creds', servers.creds, '--db', db, '--replicas', String(replicas), '--history-seconds', '60'], {}, 60_000, cli);
  try {
    // A connection each: one kept alive may be closed by the server as it is reused (ECONNRESET).
    const api = (path: string, init?: RequestInit) => fetch(`http://127.0.0.1:${router.apiPort}${path}`, { ...init, headers: { ...init?.headers, connection: 'close' } });
    // The stream's first change, so that the load is applied into a view that holds something, as a serving one does.
    await api('/subscriptions', { method: 'POST', body: '[[1, 2]]', headers: { 'content-type': 'application/json' } });
    const started = performance.now();
    const loaded = (async () => {
      const load = spawnC1m(['friends', 'load', graph, '--nats', servers.urls, '--nats-creds', servers.creds]);
      let out = '';
      load.stdout.on('data', (d) => (out += d));
      await new Promise((resolve) => load.once('close', resolve));
      const messages = Number(/ in (\d+) messages to C1M_STORE/.exec(out)?.[1]);
      if (!messages) throw new Error(`c1m friends load --nats: ${out}`);
      const loadSeconds = (performance.now() - started) / 1000;
      for (;;) {
        const { store } = (await (await api('/stats')).json()) as { store: { applied: number } };
        if (store.applied >= 1 + messages) return { messages, loadSeconds };
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    const users = Number(flags.users);
    const lookup = async () => (await api(`/subscribers/${1 + Math.floor(Math.random() * users)}`)).arrayBuffer();
    const { longestMs, answers } = await longestAnswer(lookup, loaded);
    const { messages, loadSeconds } = await loaded;
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `serving (${build}), round ${round}: ${messages} messages published in ${loadSeconds.toFixed(1)} s, applied by the router ${seconds.toFixed(1)} s after the load began; ` +
        `longest lookup answer ${Math.round(longestMs)} ms of ${answers}; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`,
    );
  } finally {
    await stopChild(router.child);
    rmSync(viewDir, { recursive: true, force: true });
  }
}

async function rebuilds(servers: JetStreamServers): Promise<void> {
  let started = performance.now();
  // The meta leader of a new cluster is elected a moment after its servers accept connections: the loader waits for it.
  const loaded = c1m(['friends', 'load', graph, '--nats', servers.urls, '--nats-creds', servers.creds, '--replicas', String(replicas)]).trim();
  const loadSeconds = (performance.now() - started) / 1000;
  console.log(`load: ${loaded}`);
  console.log(`load: the command took ${loadSeconds.toFixed(1)} s`);

  const nc = await connectJetStream(servers.urls, { name: 'bench-storelog', creds: servers.creds, inboxPrefix: ROUTER_INBOX });
  const info = await (await jetstreamManager(nc)).streams.info(STORE_STREAM);
  console.log(
    `stream: ${info.state.messages} messages, ${mib(info.state.bytes)} per replica; on disk ${[...servers.servers].map(([name, s]) => `${name} ${mib(diskBytes(s.storeDir))}`).join(', ')}`,
  );

  const logger = pino({ level: 'silent' });
  const jsm = await jetstreamManager(nc);
  const removeView = (db: string) => ['', '-wal', '-shm'].forEach((suffix) => rmSync(`${db}${suffix}`, { force: true }));
  for (let round = 1; round <= Number(flags.rounds); round++) {
    const ways = flags.snapshot ? (['together', 'snapshot'] as const) : round % 2 ? (['together', 'alone'] as const) : (['alone', 'together'] as const);
    for (const way of ways) {
      const db = join(dir, `view-${way}.db`);
      removeView(db);
      if (way === 'snapshot') {
        // Of the view just rebuilt from the whole stream.
        started = performance.now();
        const copy = copyView(join(dir, 'view-together.db'));
        const copied = performance.now();
        // A connection of its own: the copy held the event loop longer than the servers wait for a ping's answer.
        const writer = await connectJetStream(servers.urls, { name: 'bench-storelog-snapshot', creds: servers.creds, inboxPrefix: ROUTER_INBOX });
        const manifest = await publishSnapshot(writer, copy);
        await writer.close();
        console.log(`snapshot written, round ${round}: ${mib(manifest.bytes)} in ${manifest.chunks} messages in ${((performance.now() - started) / 1000).toFixed(1)} s (the copy ${((copied - started) / 1000).toFixed(1)} s)`);
      } else if (flags.snapshot) await jsm.streams.delete(SNAPSHOT_STREAM).catch(() => undefined); // the whole stream, then
      started = performance.now();
      const store = await openReplicatedStore(nc, { db, logger, runEdges: way === 'alone' ? 1 : undefined });
      const seconds = (performance.now() - started) / 1000;
      const rows = store.count();
      await store.close();
      console.log(`rebuild (${way}), round ${round}: ${rows.toLocaleString('en-US')} rows in ${seconds.toFixed(1)} s = ${Math.round(rows / seconds).toLocaleString('en-US')} rows/s; view ${mib(diskBytes(db))}`);
    }
    for (const way of ways) removeView(join(dir, `view-${way}.db`));
  }
  await nc.close();
}
