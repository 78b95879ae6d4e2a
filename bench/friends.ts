/**
 * Friends-graph benchmark: generate a Barabási–Albert graph (python3-igraph side
 * by side when installed), write it, bulk-load it mutual into a fresh store,
 * then measure getSubscribers latency and RSS in a fresh process.
 *
 *   node dist/bench/friends.js [--users N] [--m M] [--seed S] [--cache-mib C] [--warm-cache] [--mmap-mib M]
 *                                      [--page-size B] [--lookups K] [--dir DIR]
 *
 * Defaults: 1,000,000 users x m=15, 16 MiB page cache, no mmap, the store's
 * default page size for the new database, 10,000 random lookups, files under
 * ./bench-results/. Env FRIENDS_USERS, FRIENDS_M, FRIENDS_CACHE_MIB,
 * FRIENDS_MMAP_MIB and FRIENDS_LOOKUPS set the same for a quick run.
 *
 * The lookup probe first warms up with 1,000 lookups of other random users (JIT,
 * statement and interior B-tree pages, as in a running server), then times
 * 10,000 random users and 100 rounds of the 10 largest hubs.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { finished } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generateBarabasiAlbert, writeEdgeList, xoshiro128ss } from '../subsmanager/graph.js';
import { rssOf, spawnServer } from '../loadgen/server-process.js';
import { bulkLoadFile } from '../subsmanager/bulkload.js';
import { graphStats, writeDegreeChart } from '../subsmanager/stats.js';
import { openStore } from '../subsmanager/store.js';
import { percentile } from './probe.js';

const { values: flags } = parseArgs({
  options: {
    users: { type: 'string', default: process.env.FRIENDS_USERS ?? '1000000' },
    m: { type: 'string', default: process.env.FRIENDS_M ?? '15' },
    seed: { type: 'string', default: '1' },
    'cache-mib': { type: 'string', default: process.env.FRIENDS_CACHE_MIB ?? '16' },
    'warm-cache': { type: 'boolean', default: false },
    'mmap-mib': { type: 'string', default: process.env.FRIENDS_MMAP_MIB ?? '0' },
    'page-size': { type: 'string' },
    lookups: { type: 'string', default: process.env.FRIENDS_LOOKUPS ?? '10000' },
    dir: { type: 'string', default: 'bench-results' },
    /** Internal: run the lookup phase in this (fresh) process against --dir's store. */
    'lookup-probe': { type: 'boolean', default: false },
  },
});
const users = Number(flags.users);
const m = Number(flags.m);
const seed = Number(flags.seed);
const cacheMiB = Number(flags['cache-mib']);
const warmCache = flags['warm-cache'];
const mmapMiB = Number(flags['mmap-mib']);
const pageSize = flags['page-size'] === undefined ? undefined : Number(flags['page-size']);
const lookups = Number(flags.lookups);
const dir = resolve(flags.dir);
const dbPath = join(dir, 'friends-bench.db');

interface LookupResult {
  typical: { p50: number; p99: number; meanSubscribers: number };
  hubs: { p50: number; p99: number; largest: number };
  rssMiB: number;
}

if (flags['lookup-probe']) {
  process.stdout.write(JSON.stringify(probeLookups()));
} else {
  await main();
}

async function main(): Promise<void> {
  mkdirSync(dir, { recursive: true });
  console.log(`friends benchmark: ${users.toLocaleString('en-US')} users x m=${m}, seed ${seed}, cache ${cacheMiB} MiB, mmap ${mmapMiB} MiB, files in ${dir}`);

  let started = process.hrtime.bigint();
  const graph = generateBarabasiAlbert({ users, m, seed });
  const generateSeconds = secondsSince(started);
  console.log(`generate (c1m):      ${generateSeconds.toFixed(2)} s, ${(graph.endpoints.length / 2).toLocaleString('en-US')} edges`);
  console.log(`generate (igraph):   ${igraphSeconds()}`);

  const edgesPath = join(dir, `friends-${users}x${m}.edges`);
  started = process.hrtime.bigint();
  const out = createWriteStream(edgesPath);
  await writeEdgeList(graph, out);
  out.end();
  await finished(out);
  console.log(`write edge list:     ${secondsSince(started).toFixed(2)} s, ${mib(statSync(edgesPath).size)} MiB`);

  for (const suffix of ['', '-wal', '-shm']) rmSync(dbPath + suffix, { force: true });
  const store = openStore(dbPath, { cacheMiB, pageSize });
  const load = await bulkLoadFile(store, edgesPath, { direction: 'mutual' });
  const buildWriteSeconds = load.buildSeconds - load.buildSortSeconds;
  console.log(
    `load (mutual):       ${load.rowsAdded.toLocaleString('en-US')} rows in ${load.seconds.toFixed(1)} s = ${Math.round(load.rowsPerSecond).toLocaleString('en-US')} rows/s; page size ${store.db.pragma('page_size', { simple: true })}\n` +
      `                     read+parse ${load.readSeconds.toFixed(1)} s, ` +
      (load.parallelBuild
        ? `parallel build ${load.buildSeconds.toFixed(1)} s (slower worker: sort ${load.buildSortSeconds.toFixed(1)} s, scratch writes ~${buildWriteSeconds.toFixed(1)} s), copy ${load.copySeconds.toFixed(1)} s, `
        : `insert ${load.copySeconds.toFixed(1)} s, `) +
      `commit+checkpoint ${load.commitSeconds.toFixed(1)} s`,
  );
  started = process.hrtime.bigint();
  const stats = graphStats(store, dbPath);
  const chartPath = join(dir, 'friends-degrees.svg');
  await writeDegreeChart(stats.histogram, chartPath);
  console.log(`stats:               ${secondsSince(started).toFixed(1)} s; subscribers per user mean ${stats.subscribers.mean.toFixed(1)}, median ${stats.subscribers.median}, p99 ${stats.subscribers.p99}, max ${stats.subscribers.max}; chart ${chartPath}`);
  store.close();
  console.log(`db size:             ${mib(stats.diskBytes)} MiB (database + WAL, after the load's checkpoint)`);

  const probe = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--lookup-probe', '--dir', dir, '--users', String(users), '--cache-mib', String(cacheMiB), '--mmap-mib', String(mmapMiB), '--lookups', String(lookups), ...(warmCache ? ['--warm-cache'] : [])], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (probe.status !== 0) throw new Error(`lookup probe failed with status ${probe.status}`);
  const result = JSON.parse(probe.stdout) as LookupResult;
  console.log(`getSubscribers, ${lookups.toLocaleString('en-US')} random users (mean ${result.typical.meanSubscribers.toFixed(1)} subscribers): p50 ${result.typical.p50.toFixed(1)} µs, p99 ${result.typical.p99.toFixed(1)} µs`);
  console.log(`getSubscribers, 10 largest hubs (largest ${result.hubs.largest.toLocaleString('en-US')} subscribers), 100 rounds: p50 ${result.hubs.p50.toFixed(1)} µs, p99 ${result.hubs.p99.toFixed(1)} µs`);
  console.log(
    `RSS of a fresh process after opening the store and those lookups (cache ${cacheMiB} MiB${warmCache ? ', warmed at open' : ''}, mmap ${mmapMiB} MiB): ${result.rssMiB.toFixed(0)} MiB` +
      (mmapMiB > 0 ? ` (includes mapped file pages read, up to ${mmapMiB} MiB: clean, reclaimable file cache)` : ''),
  );
  const resume = resumeProbe();
  console.log(
    `history: ${resume.rows.toLocaleString('en-US')} messages of ${resume.bodyBytes} B (${resume.sendsPerSecond.toLocaleString('en-US')} sends/s for ${resume.seconds} s): ` +
      `${resume.bytesPerMessage} B per message on disk, appended at ${resume.appendMicros.toFixed(2)} µs per message (one transaction per ${resume.batch})`,
  );
  for (const [who, r] of Object.entries(resume.replays)) {
    console.log(`resume after missing ${resume.missedSeconds} s, ${who}: p50 ${r.p50.toFixed(0)} µs, p99 ${r.p99.toFixed(0)} µs, ${r.meanMessages.toFixed(1)} messages replayed on average`);
  }
  const server = await serverRss();
  console.log(`c1m server on the loaded store, after 1,000 sends to random users, no connections: RSS ${server.rssMiB.toFixed(0)} MiB (${server.flags})`);
}

/** Starts `c1m server` on the loaded store with the same cache settings, sends through its API, and reads its RSS. */
async function serverRss(): Promise<{ rssMiB: number; flags: string }> {
  const flags = ['--cache-mib', String(cacheMiB), '--mmap-mib', String(mmapMiB), ...(warmCache ? ['--warm-cache'] : [])];
  const { child, apiPort } = await spawnServer(['--db', dbPath, '--max-user-id', String(users), ...flags]);
  try {
    const random = xoshiro128ss(seed + 3);
    for (let i = 0; i < 1000; i++) {
      const res = await fetch(`http://127.0.0.1:${apiPort}/send/${1 + Math.floor(random() * users)}`, { method: 'POST', body: 'x' });
      if (!res.ok) throw new Error(`send: ${res.status}`);
    }
    return { rssMiB: rssOf(child.pid!) / 2 ** 20, flags: flags.join(' ') };
  } finally {
    child.kill('SIGTERM');
  }
}

/** Runs in a fresh process so its RSS is the store's, not the generator's arrays. */
/**
 * The message history on the loaded graph: a window of sends from random
 * users, then resumes that missed the last second of it, for random users,
 * the friends of the largest hubs (who hear a hub) and the hubs themselves
 * (who hear thousands).
 */
function resumeProbe() {
  const [sendsPerSecond, seconds, missedSeconds, bodyBytes, batch] = [2000, 120, 1, 100, 2000];
  const store = openStore(dbPath, { cacheMiB, mmapMiB });
  const history = store.history({ seconds: 3600, perSubject: 1000 });
  if (!history.claimLease()) throw new Error(`another process numbers ${dbPath}'s messages`);
  const pagesBefore = (store.db.pragma('page_count', { simple: true }) as number) * (store.db.pragma('page_size', { simple: true }) as number);
  const random = xoshiro128ss(seed + 4);
  const body = Buffer.alloc(bodyBytes, 'x');
  const rows = sendsPerSecond * seconds;
  const started = process.hrtime.bigint();
  for (let i = 0; i < rows; i++) {
    history.append(1 + Math.floor(random() * users), body);
    if ((i + 1) % batch === 0) history.flush();
  }
  history.flush();
  const appendMicros = Number(process.hrtime.bigint() - started) / 1000 / rows;
  store.db.pragma('wal_checkpoint(TRUNCATE)');
  const pagesAfter = (store.db.pragma('page_count', { simple: true }) as number) * (store.db.pragma('page_size', { simple: true }) as number);
  const after = history.lastId - missedSeconds * sendsPerSecond;
  const hubIds = store.db.prepare('SELECT subscribee FROM subscriptions GROUP BY subscribee ORDER BY count(*) DESC LIMIT 10').pluck().all() as number[];
  const friendsOfHubs = hubIds.flatMap((hub) => store.getSubscribers(hub).slice(0, 100));
  const who: Record<string, number[]> = {
    'random users': Array.from({ length: 1000 }, () => 1 + Math.floor(random() * users)),
    'friends of the 10 largest hubs': friendsOfHubs,
    'the 10 largest hubs': Array.from({ length: 100 }, (_, i) => hubIds[i % hubIds.length]),
  };
  const replays: Record<string, { p50: number; p99: number; meanMessages: number }> = {};
  for (const [name, ids] of Object.entries(who)) {
    const times: number[] = [];
    let messages = 0;
    for (const user of ids) {
      const t = process.hrtime.bigint();
      const replay = history.replay(user, after);
      times.push(Number(process.hrtime.bigint() - t) / 1000);
      if (!replay.lost) messages += replay.messages.length;
    }
    times.sort((x, y) => x - y);
    replays[name] = { p50: percentile(times, 0.5), p99: percentile(times, 0.99), meanMessages: messages / ids.length };
  }
  history.close();
  store.close();
  return { rows, bodyBytes, sendsPerSecond, seconds, missedSeconds, batch, appendMicros, bytesPerMessage: Math.round((pagesAfter - pagesBefore) / rows), replays };
}

function probeLookups(): LookupResult {
  const store = openStore(dbPath, { cacheMiB, mmapMiB, warmCache, readonly: true });
  const hubIds = store.db.prepare('SELECT subscribee FROM subscriptions GROUP BY subscribee ORDER BY count(*) DESC LIMIT 10').pluck().all() as number[];
  const warmUp = xoshiro128ss(seed + 2);
  for (let i = 0; i < 1000; i++) store.getSubscribers(1 + Math.floor(warmUp() * users));
  const random = xoshiro128ss(seed + 1);
  const typical: number[] = [];
  let subscribers = 0;
  for (let i = 0; i < lookups; i++) {
    const user = 1 + Math.floor(random() * users);
    const t = process.hrtime.bigint();
    subscribers += store.getSubscribers(user).length;
    typical.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  const hubs: number[] = [];
  let largest = 0;
  for (let round = 0; round < 100; round++) {
    for (const hub of hubIds) {
      const t = process.hrtime.bigint();
      largest = Math.max(largest, store.getSubscribers(hub).length);
      hubs.push(Number(process.hrtime.bigint() - t) / 1000);
    }
  }
  const rssMiB = process.memoryUsage().rss / 2 ** 20;
  store.close();
  typical.sort((a, b) => a - b);
  hubs.sort((a, b) => a - b);
  return {
    typical: { p50: percentile(typical, 0.5), p99: percentile(typical, 0.99), meanSubscribers: subscribers / lookups },
    hubs: { p50: percentile(hubs, 0.5), p99: percentile(hubs, 0.99), largest },
    rssMiB,
  };
}

/** Times the same graph in python3-igraph; Debian's package lands in /usr/bin/python3, which a pyenv python3 on PATH may shadow. */
function igraphSeconds(): string {
  const script = `import time, igraph\nt = time.perf_counter()\nigraph.Graph.Barabasi(${users}, ${m})\nprint(time.perf_counter() - t)`;
  for (const python of ['python3', '/usr/bin/python3']) {
    const probe = spawnSync(python, ['-c', 'import igraph'], { stdio: 'ignore' });
    if (probe.status !== 0) continue;
    const run = spawnSync(python, ['-c', script], { encoding: 'utf8' });
    if (run.status === 0) return `${Number(run.stdout).toFixed(2)} s (${python}, Graph.Barabasi(${users}, ${m}))`;
  }
  return 'igraph not installed';
}

function secondsSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(0);
}
