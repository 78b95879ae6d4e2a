/**
 * The cluster benchmark: `c1m cluster` holding more streams than one process
 * may open, and one `c1m server` at its usual size, in the same run, measured
 * from outside with the C flood holding the streams:
 * - one send to every stream (all subscribed to one user): delivered chunks/s and latency;
 * - sends to random single users at fixed rates: delivery latency;
 * - RSS and PSS per stream of every c1m process, and each process's baseline;
 * - CPU per delivery; the directory rebuild after a router restart.
 *
 *   npm run bench:cluster -- --connections 60000 --single 15000
 *   npm run bench:cluster -- --bus plain,auth,tls --rounds 2 --cluster-only    (the bus's security, modes in turn)
 *   npm run bench:cluster -- --sends-only --connections 20000 --routers 2 --partitions 2 --rates 2000,4000,6000
 *     (send-bound: the cluster alone, random-user sends at each rate, router CPU per send; issue 28's partitions)
 */
import { Command, Option } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { broadcast, hold, randomSends, sendTo, subscribeAll, type Holder } from './probe.js';
import { until } from './until.js';
import { pssOf, rssOf, spawnCluster, spawnServer, type ClusterProcess } from '../loadgen/server-process.js';
import { setTimeout as sleep } from 'node:timers/promises';

const opts = new Command('bench-cluster')
  .addOption(new Option('--connections <n>', 'streams the cluster holds').default(60000).argParser(Number))
  .addOption(new Option('--single <n>', 'streams the single process holds (and the cluster, for the same-N comparison)').default(15000).argParser(Number))
  .addOption(new Option('--edges <n>', 'edge processes (default: enough for --connections at the open-file limit)').argParser(Number))
  .addOption(new Option('--broadcasts <n>', 'sends to every stream, back to back').default(10).argParser(Number))
  .addOption(new Option('--rates <list>', 'random-user send rates, per second').default('2000,5000'))
  .addOption(new Option('--seconds <n>', 'duration of each random-send phase').default(10).argParser(Number))
  .addOption(new Option('--batch-ms <ms>', "the cluster router's batch window (default: c1m cluster's)").argParser(Number))
  .addOption(
    new Option('--bus <modes>', "the cluster's bus: auth (c1m cluster's default: NKey users with permissions), plain (--bus-insecure: no users), tls (auth over TLS); several, comma-separated, run in turn")
      .default(['auth'])
      .argParser((t: string) => t.split(',')),
  )
  .addOption(new Option('--rounds <n>', 'runs of each bus mode, in turn').default(1).argParser(Number))
  .option('--cluster-only', 'skip the single process')
  .option('--sends-only', 'the cluster alone, random-user sends only: delivery latency and router CPU per send at each rate')
  .addOption(new Option('--routers <n>', 'router processes of the cluster').default(1).argParser(Number))
  .addOption(new Option('--partitions <n>', "the cluster's partitions of the subjects, shared among the routers").default(1).argParser(Number))
  .addOption(new Option('--port-base <n>', "the held streams' first source port (--sends-only; another bench on the box may hold the default's)").default(10_000).argParser(Number))
  .parse()
  .opts<{
    connections: number;
    single: number;
    edges?: number;
    broadcasts: number;
    rates: string;
    seconds: number;
    batchMs?: number;
    bus: string[];
    rounds: number;
    clusterOnly?: boolean;
    sendsOnly?: boolean;
    routers: number;
    partitions: number;
    portBase: number;
  }>();

const BUS_ARGS: Record<string, string[]> = { auth: [], plain: ['--bus-insecure'], tls: ['--nats-tls'] };

const HOST = '127.0.0.1';
/** Long enough for V8's memory reducer to run once a process goes quiet. */
const SETTLE_MS = 12_000;
const memory = (pids: number[]) => ({
  rssMiB: +(pids.reduce((n, pid) => n + rssOf(pid), 0) / 2 ** 20).toFixed(1),
  pssMiB: +(pids.reduce((n, pid) => n + pssOf(pid), 0) / 2 ** 20).toFixed(1),
});

async function single(dir: string, n: number, rates: number[]) {
  const db = join(dir, 'single.db');
  const hub = n + 1;
  subscribeAll(db, hub, n);
  const server = await spawnServer(['--db', db, '--heartbeat', '0']); // the flood counts heartbeats as chunks
  const pid = server.child.pid!;
  const holder = hold(server.port, 1, n, 10_000);
  try {
    const opened = await holder.opened();
    await sleep(2000);
    const fanout = await broadcast(sendTo(server.apiPort, hub), n, opts.broadcasts, [holder], [pid]);
    const random = [];
    for (const rate of rates) random.push(await randomSends(server.apiPort, n, rate, opts.seconds, [pid]));
    return { streams: opened.welcomed, rssMiB: +(rssOf(pid) / 2 ** 20).toFixed(1), broadcast: fanout, random };
  } finally {
    await holder.close();
    server.child.kill('SIGTERM');
    await new Promise((r) => server.child.once('exit', r));
  }
}

async function cluster(dir: string, n: number, atSingle: number, rates: number[], bus: string) {
  const db = join(dir, 'cluster.db');
  const [hubAll, hubFirst] = [n + 1, n + 2];
  subscribeAll(db, hubAll, n);
  subscribeAll(db, hubFirst, atSingle);
  const args = ['--db', db, ...BUS_ARGS[bus], ...(opts.batchMs === undefined ? [] : ['--batch-ms', String(opts.batchMs)]), ...(opts.edges ? ['--edges', String(opts.edges)] : ['--connections', String(n)]), '--log-level', 'warn', '--heartbeat', '0'];
  const c = await spawnCluster(args);
  const edgePids = c.edges.map((e) => e.pid);
  const routerPid = c.pids['router-0'];
  const c1mPids = () => [...edgePids, routerPid];
  const holders: Holder[] = [];
  try {
    await sleep(2000);
    const baseline = {
      edgeRssMiB: edgePids.map((pid) => +(rssOf(pid) / 2 ** 20).toFixed(1)),
      edgePssMiB: edgePids.map((pid) => +(pssOf(pid) / 2 ** 20).toFixed(1)),
      router: memory([routerPid]),
      nats: memory([c.pids.nats]),
    };
    // Memory per stream is the growth from `atSingle` streams to `n`, both read idle after a quiet spell:
    // by then V8's heaps have grown to their working size, and no message has been sent yet.
    holders.push(hold(c.port, 1, atSingle, 10_000));
    await holders[0].opened();
    await sleep(SETTLE_MS);
    const before = memory(c1mPids());
    const ramp0 = performance.now();
    holders.push(hold(c.port, atSingle + 1, n - atSingle, 20_000));
    const rest = await holders[1].opened();
    const rampSeconds = (performance.now() - ramp0) / 1000;
    await sleep(SETTLE_MS);
    const held = memory(c1mPids());
    const stats = (await (await fetch(`http://${HOST}:${c.apiPort}/stats`)).json()) as { connections: number };
    const mem = {
      streams: stats.connections,
      c1m: held,
      nats: memory([c.pids.nats]),
      rssBytesPerStream: Math.round(((held.rssMiB - before.rssMiB) * 2 ** 20) / (stats.connections - atSingle)),
      pssBytesPerStream: Math.round(((held.pssMiB - before.pssMiB) * 2 ** 20) / (stats.connections - atSingle)),
      rssBytesPerStreamWithBaselines: Math.round((held.rssMiB * 2 ** 20) / stats.connections),
      pssBytesPerStreamWithBaselines: Math.round((held.pssMiB * 2 ** 20) / stats.connections),
    };
    // The same number of recipients as the single process (the first `atSingle` follow their own hub).
    const sameN = await broadcast(sendTo(c.apiPort, hubFirst), atSingle, opts.broadcasts, holders, c1mPids());
    const fanout = await broadcast(sendTo(c.apiPort, hubAll), n, opts.broadcasts, holders, [...c1mPids(), c.pids.nats]);
    const random = [];
    for (const rate of rates) random.push(await randomSends(c.apiPort, n, rate, opts.seconds, [...c1mPids(), c.pids.nats], undefined, edgePids));

    const directoryRebuild = await rebuildDirectory(c, routerPid, stats.connections);
    return {
      edges: edgePids.length,
      baseline,
      sameN: { streams: atSingle, broadcast: sameN },
      ramp: { streams: rest.welcomed, failed: rest.failed, seconds: +rampSeconds.toFixed(1) },
      memory: mem,
      broadcast: fanout,
      random,
      directoryRebuild,
    };
  } finally {
    for (const h of holders) await h.close();
    c.child.kill('SIGTERM');
    await new Promise((r) => c.child.once('exit', r));
  }
}

/** Kills the router; the supervisor starts a new one, which asks every edge for its state: how long until it knows every stream again. */
async function rebuildDirectory(c: ClusterProcess, routerPid: number, streams: number) {
  const killedAt = Date.now();
  process.kill(routerPid, 'SIGKILL');
  // A refused fetch (the new router not listening yet) is one more try; 0: not rebuilt within 30 s.
  const rebuilt = await until(
    'the new router to know every stream',
    async () => (((await (await fetch(`http://${HOST}:${c.apiPort}/stats`)).json()) as { connections: number }).connections === streams ? Date.now() : undefined),
    30_000,
    20,
  ).catch(() => 0);
  const listening = c
    .output()
    .split('\n')
    .filter((l) => l.includes('c1m router listening'))
    .map((l) => JSON.parse(l).time as number)
    .pop()!;
  return { streams, msFromKill: rebuilt ? rebuilt - killedAt : null, msFromNewRouterListening: rebuilt ? rebuilt - listening : null };
}

/**
 * Send-bound: `n` streams held, then random-user sends at each rate through the API (which either router takes, the
 * kernel choosing per connection); the CPU per send is the routers' alone.
 */
async function sendBound(dir: string, n: number, rates: number[]) {
  const db = join(dir, 'cluster.db');
  const layout = ['--routers', String(opts.routers), ...(opts.partitions > 1 ? ['--partitions', String(opts.partitions)] : [])];
  const args = ['--db', db, ...layout, ...(opts.batchMs === undefined ? [] : ['--batch-ms', String(opts.batchMs)]), ...(opts.edges ? ['--edges', String(opts.edges)] : ['--connections', String(n)]), '--log-level', 'warn', '--heartbeat', '0'];
  const c = await spawnCluster(args);
  const routers = Object.entries(c.pids)
    .filter(([name]) => name.startsWith('router-'))
    .map(([, pid]) => pid);
  const holder = hold(c.port, 1, n, opts.portBase);
  try {
    const opened = await holder.opened();
    await sleep(2000);
    // Which router leads which partition, as the routers answering /stats say: each on a new connection
    // (fetch keeps its connection, and the kernel hands a connection to one router).
    const leading = new Map<number, number>();
    for (let i = 0; i < 20; i++) {
      const s = (await (await fetch(`http://${HOST}:${c.apiPort}/stats`, { headers: { connection: 'close' } })).json()) as { pid: number; partitions?: { partition: number; leading: boolean }[] };
      for (const p of s.partitions ?? [{ partition: 0, leading: true }]) if (p.leading) leading.set(p.partition, s.pid);
    }
    const random = [];
    for (const rate of rates) random.push(await randomSends(c.apiPort, n, rate, opts.seconds, routers));
    return { streams: opened.welcomed, failed: opened.failed, edges: c.edges.length, routers: routers.length, partitions: opts.partitions, leaders: Object.fromEntries(leading), random };
  } finally {
    await holder.close();
    c.child.kill('SIGTERM');
    await new Promise((r) => c.child.once('exit', r));
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-bench-cluster-'));
  const rates = opts.rates.split(',').map(Number);
  console.log(`machine: ${cpus().length} x ${cpus()[0].model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
  const unknown = opts.bus.filter((b) => !BUS_ARGS[b]);
  if (unknown.length) throw new Error(`unknown bus mode ${unknown.join(', ')} (${Object.keys(BUS_ARGS).join(', ')})`);
  try {
    if (opts.sendsOnly) {
      const result = await sendBound(dir, opts.connections, rates);
      console.log('send-bound:', JSON.stringify(result, null, 1));
      console.table(result.random.map((r) => ({ rate: r.configuredRate, achieved: r.achievedRate, errors: r.errors, 'delivery p99 ms': r.deliveryLatencyMs.p99, 'router CPU us per send': r.cpuMicrosPerSend })));
      return;
    }
    const one = opts.clusterOnly ? undefined : await single(dir, opts.single, rates);
    if (one) console.log('single process:', JSON.stringify(one, null, 1));
    const runs: { bus: string; many: Awaited<ReturnType<typeof cluster>> }[] = [];
    for (let round = 0; round < opts.rounds; round++)
      for (const bus of opts.bus) {
        rmSync(join(dir, 'cluster.db'), { force: true });
        const many = await cluster(dir, opts.connections, opts.single, rates, bus);
        runs.push({ bus, many });
        console.log(`cluster (bus ${bus}, round ${round}):`, JSON.stringify(many, null, 1));
        if (one)
          console.log(
            JSON.stringify({
              broadcastSpeedup: +(many.broadcast.burst.deliveredChunksPerSecond / one.broadcast.burst.deliveredChunksPerSecond).toFixed(2),
              oneSendP99AtSameN: { single: one.broadcast.oneSendLatencyMs.p99, cluster: many.sameN.broadcast.oneSendLatencyMs.p99 },
            }),
          );
      }
    // Per bus mode, the range of the figures the bus's security could move.
    const range = (values: number[]) => `${Math.min(...values)}-${Math.max(...values)}`;
    console.table(
      [...new Set(opts.bus)].map((bus) => {
        const mine = runs.filter((r) => r.bus === bus).map((r) => r.many);
        return {
          bus,
          'broadcast chunks/s': range(mine.map((m) => m.broadcast.burst.deliveredChunksPerSecond)),
          'CPU us per delivered chunk': range(mine.map((m) => m.broadcast.burst.cpuMicrosPerDelivery)),
          ...Object.fromEntries(rates.map((rate, i) => [`unicast p99 ms at ${rate}/s`, range(mine.map((m) => m.random[i].deliveryLatencyMs.p99))])),
          ...Object.fromEntries(rates.map((rate, i) => [`edges' CPU us per chunk at ${rate}/s`, range(mine.map((m) => m.random[i].edgesCpuMicrosPerDelivery!))])),
        };
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
