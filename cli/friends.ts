import { Command, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { integer } from '../server/options.js';
import { busSettings } from './cluster.js';
import { tableOption } from './options.js';
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import type { Direction, LoadProgress } from '../subsmanager/bulkload.js';

/** A progress bar on stderr when it is a terminal; nothing otherwise (pipes, CI, logs). */
function progressBar(format: string): SingleBar | undefined {
  if (!process.stderr.isTTY) return undefined;
  return new SingleBar({ format, stream: process.stderr, hideCursor: true, etaBuffer: 50 });
}

function formatCount(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

function formatBytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** The bus options of a friends command that writes a replicated store, as a router does. */
const busOptions = (command: Command, name: 'friends load' | 'friends snapshot'): Command =>
  command.addOption(tableOption(name, 'natsCreds')).addOption(tableOption(name, 'natsCa')).addOption(tableOption(name, 'busInsecure'));

export function friendsCommand(): Command {
  const friends = new Command('friends').description('the friends graph: generate a Barabási–Albert graph, bulk-load an edge list, inspect the store');
  addGenerate(friends);
  addLoad(friends);
  addSnapshot(friends);
  addStats(friends);
  return friends;
}

/** `c1m friends generate`. */
function addGenerate(friends: Command): void {
  friends
    .command('generate')
    .description('write an undirected Barabási–Albert graph as an edge list (`A B` per line, ids 1..N)')
    .requiredOption('--users <n>', 'number of users', integer('users', 1))
    .requiredOption('--m <m>', 'edges each new user brings, to distinct existing users', integer('m', 1))
    .option('--seed <s>', 'random seed (same seed, same graph)', integer('seed', 0), 1)
    .option('--out <file>', 'output file (default: stdout)')
    .action(async (opts: { users: number; m: number; seed: number; out?: string }, command: Command) => {
      if (opts.users < opts.m + 1) command.error(`error: --users must be at least --m + 1 (${opts.m + 1})`);
      // Each command loads what it needs when it runs: `c1m edge` shares this CLI and must stay light.
      const { generateBarabasiAlbert, barabasiAlbertEdgeCount, writeEdgeList } = await import('../subsmanager/graph.js');
      const total = barabasiAlbertEdgeCount(opts.users, opts.m);
      const bar = progressBar('{phase} [{bar}] {percentage}% | {value}/{total} edges | {duration_formatted}');
      bar?.start(total, 0, { phase: 'generate' });
      const graph = generateBarabasiAlbert({ ...opts, onProgress: (edges) => bar?.update(edges) });
      bar?.update(0, { phase: 'write   ' });
      const out: Writable = opts.out ? createWriteStream(opts.out) : process.stdout;
      try {
        await writeEdgeList(graph, out, (edges) => bar?.update(edges));
        if (opts.out) {
          out.end();
          await finished(out);
        }
      } catch (err) {
        bar?.stop();
        command.error(`error: cannot write ${opts.out ?? 'stdout'}: ${(err as Error).message}`);
      }
      bar?.stop();
    });
}

/** `c1m friends load`: into this host's store, or with --nats into a replicated cluster's (loadReplicated). */
function addLoad(friends: Command): void {
  const load = friends
    .command('load')
    .description("bulk-load an edge list into the subscription store, all or nothing; with --nats, into a replicated cluster's store (its stream)")
    .argument('<file>', "edge list file, or '-' for stdin")
    .addOption(tableOption('friends load', 'db'))
    .addOption(new Option('--mutual', 'friends are mutual: `A B` subscribes A to B and B to A (default)').conflicts('oneWay'))
    .addOption(new Option('--one-way', '`A B` means A subscribes to B'))
    .addOption(new Option('--nats <url>', "publish to the store's stream on these NATS servers (comma-separated) instead of writing --db; every router applies it"))
    .addOption(new Option('--replicas <n>', "with --nats: the stream's replicas, if this load creates it (no router has yet)").argParser(integer('replicas', 1)));
  busOptions(load, 'friends load').action(
    async (file: string, opts: { db: string; mutual?: boolean; oneWay?: boolean; nats?: string; natsCreds?: string; natsCa?: string; busInsecure?: boolean; replicas?: number }, command: Command) => {
      const direction: Direction = opts.oneWay ? 'one-way' : 'mutual';
      if (opts.nats) return loadReplicated(file, { ...opts, nats: opts.nats }, direction, command);
      if (opts.replicas !== undefined) command.error('error: --replicas is for a load with --nats');
      const [{ bulkLoadFile }, { openStore }] = await Promise.all([import('../subsmanager/bulkload.js'), import('../subsmanager/store.js')]);
      const bar = progressBar('{phase} [{bar}] {percentage}% | {rate} | {duration_formatted}');
      let store;
      try {
        store = openStore(opts.db);
        const report = await bulkLoadFile(store, file, {
          direction,
          onProgress: bar && loadProgress(bar),
        });
        bar?.stop();
        console.log(
          `loaded ${file === '-' ? 'stdin' : file} (${direction}): ${formatCount(report.edges)} edges, ` +
            `${formatCount(report.rowsRead)} rows read, ${formatCount(report.rowsAdded)} added in ${report.seconds.toFixed(1)} s ` +
            `(${formatCount(report.rowsPerSecond)} rows/s; read ${report.readSeconds.toFixed(1)} s, write ${report.writeSeconds.toFixed(1)} s)`,
        );
      } catch (err) {
        bar?.stop();
        command.error(`error: ${(err as Error).message}`);
      } finally {
        store?.close();
      }
    },
  );
}

/** `c1m friends snapshot`. */
function addSnapshot(friends: Command): void {
  const snapshot = friends
    .command('snapshot')
    .description("write a snapshot of a replicated cluster's store: a copy of a router's view (--db, on this host) at the sequence it applied, into the stream C1M_STORE_SNAPSHOT")
    .addOption(tableOption('friends snapshot', 'db'))
    .requiredOption('--nats <url>', 'NATS servers of the cluster (comma-separated)')
    .option('--purge', "then purge the store's stream up to that sequence: a view on an empty data dir loads the snapshot and applies only what came after; only once every router's view has applied it (/stats store.applied)");
  busOptions(snapshot, 'friends snapshot').action(
    async (opts: { db: string; nats: string; natsCreds?: string; natsCa?: string; busInsecure?: boolean; purge?: boolean }, command: Command) => {
      const [{ connectJetStream }, { copyView, publishSnapshot }, { ROUTER_INBOX }] = await Promise.all([
        import('../cluster/jetstream.js'),
        import('../cluster/store-snapshot-write.js'),
        import('../cluster/nats-auth.js'),
      ]);
      let nc;
      try {
        const { creds, ca } = await busSettings(opts);
        const started = performance.now();
        const copy = copyView(opts.db);
        nc = await connectJetStream(opts.nats, { name: `c1m-friends-snapshot-${process.pid}`, creds, ca, inboxPrefix: creds ? ROUTER_INBOX : undefined, persistent: false });
        const manifest = await publishSnapshot(nc, copy, { purge: opts.purge });
        console.log(
          `snapshot of ${opts.db} at sequence ${manifest.seq}: ${formatBytes(manifest.bytes)} in ${manifest.chunks} messages in ${((performance.now() - started) / 1000).toFixed(1)} s` +
            (opts.purge ? `; the store's stream purged up to ${manifest.seq}` : ''),
        );
      } catch (err) {
        command.error(`error: ${(err as Error).message}`);
      } finally {
        await nc?.close();
      }
    },
  );
}

/** `c1m friends stats`. */
function addStats(friends: Command): void {
  friends
    .command('stats')
    .description('users, subscriptions, degree distribution, top hubs, size on disk; optionally a log-log degree chart (SVG)')
    .addOption(tableOption('friends stats', 'db'))
    .option('--chart <file>', 'write the log-log degree distribution chart as SVG')
    .action(async (opts: { db: string; chart?: string }, command: Command) => {
      const [{ graphStats, writeDegreeChart }, { openStore }] = await Promise.all([import('../subsmanager/stats.js'), import('../subsmanager/store.js')]);
      let store;
      try {
        store = openStore(opts.db, { readonly: true });
        const stats = graphStats(store, opts.db);
        const { subscribers: s } = stats;
        console.log(`users:          ${formatCount(stats.users)}`);
        console.log(`subscriptions:  ${formatCount(stats.subscriptions)}`);
        console.log(`subscribers per user: mean ${s.mean.toFixed(2)}, median ${s.median}, p99 ${s.p99}, max ${s.max}`);
        console.log(`top hubs:       ${stats.hubs.map((hub) => `${hub.user} (${formatCount(hub.subscribers)})`).join(', ')}`);
        console.log(`on disk:        ${formatBytes(stats.diskBytes)} (database + WAL)`);
        if (opts.chart) {
          await writeDegreeChart(stats.histogram, opts.chart);
          console.log(`chart:          ${opts.chart}`);
        }
      } catch (err) {
        command.error(`error: ${(err as Error).message}`);
      } finally {
        store?.close();
      }
    });
}

/** A bulk load's progress on `bar`: the bytes read, then one bar for each phase of rows (build, copy or insert). */
function loadProgress(bar: SingleBar): (progress: LoadProgress) => void {
  let phase = '';
  let started = 0;
  return (progress) => {
    if (progress.phase === 'read') {
      if (phase !== 'read') bar.start(progress.totalBytes ?? 0, 0, { phase: 'read  ', rate: '' });
      phase = 'read';
      bar.update(progress.bytes, { rate: `${formatBytes(progress.bytes)}` });
    } else {
      if (phase !== progress.phase) {
        bar.stop();
        bar.start(progress.totalRows, 0, { phase: progress.phase.padEnd(6), rate: '' });
        started = performance.now();
      }
      phase = progress.phase;
      const seconds = (performance.now() - started) / 1000;
      bar.update(progress.rows, { rate: `${formatCount(seconds > 0 ? progress.rows / seconds : 0)} rows/s` });
    }
  };
}

/** `c1m friends load FILE --nats URL`: read and check the whole file, then publish it to the store's stream. */
async function loadReplicated(
  file: string,
  opts: { nats: string; natsCreds?: string; natsCa?: string; busInsecure?: boolean; replicas?: number },
  direction: Direction,
  command: Command,
): Promise<void> {
  const [{ readEdgeList }, { connectJetStream }, { publishEdges, storeStream, STORE_STREAM }, { jetstreamManager }, { ROUTER_INBOX }, { createReadStream }] = await Promise.all([
    import('../subsmanager/bulkload.js'),
    import('../cluster/jetstream.js'),
    import('../cluster/store-log.js'),
    import('@nats-io/jetstream'),
    import('../cluster/nats-auth.js'),
    import('node:fs'),
  ]);
  let nc;
  try {
    const { creds, ca } = await busSettings(opts);
    const started = performance.now();
    const input = file === '-' ? process.stdin : createReadStream(file, { highWaterMark: 1 << 20 });
    const edges = await readEdgeList(input, file === '-' ? 'stdin' : file, () => undefined);
    const read = performance.now();
    nc = await connectJetStream(opts.nats, { name: `c1m-friends-load-${process.pid}`, creds, ca, inboxPrefix: creds ? ROUTER_INBOX : undefined, persistent: false });
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    await storeStream(jsm, opts.replicas);
    const bar = progressBar('publish [{bar}] {percentage}% | {value}/{total} edges | {duration_formatted}');
    bar?.start(edges.count, 0);
    const published = await publishEdges(nc, edges, direction === 'mutual', (done) => bar?.update(done));
    bar?.stop();
    const done = performance.now();
    const info = await jsm.streams.info(STORE_STREAM);
    console.log(
      `published ${file === '-' ? 'stdin' : file} (${direction}): ${formatCount(edges.count)} edges in ${published.messages} messages to ${STORE_STREAM} ` +
        `in ${((done - started) / 1000).toFixed(1)} s (read ${((read - started) / 1000).toFixed(1)} s, publish ${((done - read) / 1000).toFixed(1)} s); ` +
        `the stream: last sequence ${info.state.last_seq}, ${formatBytes(info.state.bytes)} on each of its ${info.config.num_replicas} servers`,
    );
  } catch (err) {
    command.error(`error: ${(err as Error).message}`);
  } finally {
    await nc?.close();
  }
}
