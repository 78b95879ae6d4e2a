/**
 * The million across the three simulated hosts (issue 28, docs/hosts.md): `c1m run`'s test with the replicated
 * brain on all three hosts (on each a nats-server of one JetStream cluster and a router, over TLS, a credential per
 * process) and the edges on edge1 and edge2. The flood and the message generator run in the root namespace and
 * reach the hosts over the bridge, the flood's source addresses added to it. The streams go straight to each edge
 * host's port, where its edges share it: HAProxy's one process would hold two sockets a stream under the same
 * open-file cap as an edge. Needs root; the hosts are made for the run and taken down after it.
 *
 *   sudo node dist/bench/million-hosts.js [--sysctl] [c1m run's options: --connections, --msg-rates, --partitions, …]
 */
import { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addOptions } from '../cli/options.js';
import { credsFile } from '../cluster/nats-auth.js';
import { edgesFor, NATS_NICE } from '../cluster/run.js';
import { parseSources, rowsFromRanges, streamsPerServer } from '../loadgen/flood.js';
import { runC1m, type Deploy, type RunSettings } from '../loadgen/run.js';
import type { RunOptions } from '../loadgen/run-result.js';
import { childrenOf } from '../loadgen/server-process.js';
import { DEFAULTS } from '../server/defaults.js';
import { streamCapacity } from '../server/limits.js';
import { commandArgv, type OptionsOf } from '../server/options.js';
import { cannotRun, EDGE_HOSTS, hosts, onHosts, Rig, type Host } from './faults.js';

const ROOT = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '..' : '../..', import.meta.url));
/** Every edge of a host listens here, on the host's address. */
const STREAM_PORT = 8000;
/** The flood's source addresses on the bridge: 10.201.0.100 up, past the hosts' own. */
const FIRST_SOURCE = 100;
const REPLICAS = 3;

function sh(argv: string[]): void {
  const run = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', cwd: ROOT });
  if (run.status !== 0) throw new Error(`${argv.join(' ')}: ${run.error?.message ?? run.stderr}`);
}

/** ./sysctl.conf, in a host (`ns`) or in the root namespace: keys the kernel does not let it set are reported, not fatal (as c1m-run.sh --sysctl). */
function applySysctl(ns?: string): void {
  const argv = [...(ns ? ['ip', 'netns', 'exec', ns] : []), 'scripts/sysctl.sh', './sysctl.conf'];
  const run = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', cwd: ROOT });
  process.stderr.write(`${ns ?? 'root namespace'}: ${run.stdout.trim().split('\n').at(-1)}\n`);
}

/** The flood's source addresses: as many as --src names, on the bridge (scripts/virtual-ips.sh adds them). */
function bridgeSources(count: number, subnet: string): string[] {
  sh(['scripts/virtual-ips.sh', 'up', 'c1m-br', String(count), `${subnet}.${FIRST_SOURCE}/24`]);
  return Array.from({ length: count }, (_, i) => `${subnet}.${FIRST_SOURCE + i}`);
}

/**
 * The brain's processes above the edges, as `c1m cluster` runs them (the edge hosts' own `c1m cluster` lowers its
 * edges), all at its nats-servers' nice value: with three routers at its routers' higher one, building their views at
 * once, the nats-servers fell behind and a graph's load timed out. A router that exits (crash-only, having lost a
 * lease) is started again after a second, as its supervisor would.
 */
function superviseBrain(rig: Rig, stopping: () => boolean): void {
  const nice = (host: Host) => {
    setPriority(rig.procs.get(`nats-${host}`)!.child.pid!, NATS_NICE);
    setPriority(rig.procs.get(`router-${host}`)!.child.pid!, NATS_NICE);
  };
  const watch = (host: Host) =>
    rig.procs.get(`router-${host}`)!.child.once('exit', () => {
      if (stopping()) return;
      // As c1m cluster's supervisor says it, so the run's report counts it.
      appendFileSync(join(rig.dir, 'brain-supervisor.log'), `router-${host}: child exited; restarting\n`);
      setTimeout(() => void rig.startRouter(host).then(() => (nice(host), watch(host)), () => watch(host)), 1000);
    });
  for (const host of rig.brainHosts) (nice(host), watch(host));
}

/**
 * The hosts as one deployment for runC1m: the rig's routers and nats-servers on all three hosts, its edge hosts
 * sized for the share of the streams the flood sends each. With `sysctl`, ./sysctl.conf is applied in every host.
 */
function onSimulatedHosts(sysctl: boolean): Deploy {
  return async (o: RunSettings) => {
    const capacity = streamCapacity();
    const servers = EDGE_HOSTS.map(() => ({ host: '', port: STREAM_PORT }));
    const shares = streamsPerServer({ host: '', port: STREAM_PORT, servers, rows: rowsFromRanges(parseSources(o.src), [1, o.connections]), ports: o.ports, rate: 0, concurrency: 1, duration: 0, maxSeconds: 0 });
    const maxUserId = Math.max(o.users, o.connections);
    const rig = new Rig({
      edgesPerHost: edgesFor(Math.max(...shares), capacity),
      capacity,
      smallCapacity: capacity,
      drainRate: DEFAULTS.drainRate,
      bindPort: 0,
      statsPort: 0,
      replicas: REPLICAS,
      partitions: o.partitions!,
      sharedPort: STREAM_PORT,
      routerArgs: commandArgv('router', { maxUserId, batchMs: o.batchMs, historySeconds: o.historySeconds, historyPerSubject: o.historyPerSubject }).argv,
      edgeArgs: commandArgv('cluster', { maxUserId, heartbeatSeconds: o.heartbeatSeconds }).argv,
    });
    if (sysctl) for (const host of rig.brainHosts) applySysctl(`c1m-${host}`);
    await rig.start();
    let stopping = false;
    superviseBrain(rig, () => stopping);
    // One router of three stands by (two partitions): the sends go to one that serves, as a backend's would.
    const serving: (typeof rig.brainHosts)[number][] = [];
    for (const host of rig.brainHosts) if (await rig.apiOpen(host)) serving.push(host);
    if (!serving.length) throw new Error('no router serves');
    const api = new URL(rig.apis[rig.brainHosts.indexOf(serving[0])]);
    const procs = () => [...rig.procs.entries()];
    const pidsOf = (prefix: string) => procs().filter(([name]) => name.startsWith(prefix)).map(([, p]) => p.child.pid!);
    const supervisors = () => EDGE_HOSTS.map((host) => rig.procs.get(host)!.child.pid!);
    return {
      servers: EDGE_HOSTS.map((host) => ({ host: rig.addr[host], port: STREAM_PORT })),
      api: { host: api.hostname, port: Number(api.port), token: rig.token },
      summary: { edges: rig.edges.length, capacity: rig.edges.length * capacity, port: STREAM_PORT, apiPort: Number(api.port), nats: rig.natsUrl },
      store: { busArgs: ['--nats', rig.natsUrl, '--nats-creds', credsFile(rig.natsDir, 'router'), '--nats-ca', rig.natsTls.ca], views: rig.brainHosts.map((host) => rig.routerDb(host)) },
      pids: () => ({ edges: supervisors().flatMap(childrenOf), router: pidsOf('router-'), nats: pidsOf('nats-'), supervisor: supervisors() }),
      // Up while its edge hosts and nats-servers are: a router that exits is started again.
      running: () => procs().every(([name, p]) => name.startsWith('router-') || (p.child.exitCode === null && p.child.signalCode === null)),
      output: () => readdirSync(rig.dir).filter((f) => f.endsWith('.log')).map((f) => `==> ${f} <==\n${readFileSync(join(rig.dir, f), 'utf8')}`).join('\n'),
      async stop() {
        stopping = true;
        await rig.stop();
        // The JetStream stores and the routers' views (the graph three times over); the logs stay.
        rmSync(join(rig.dir, 'data'), { recursive: true, force: true });
      },
    };
  };
}

/**
 * `c1m run`'s test across the simulated hosts: `options` as c1m run takes them, but for the flood's source addresses,
 * which are as many as `options.src` names, on the bridge. Resolves once every process is ended and the hosts are down.
 */
export function runOnSimulatedHosts(options: RunOptions, sysctl = false) {
  return onHosts(() => {
    // The bridge's subnet, from the balancer's address on it: 10.201.0.
    const subnet = hosts('addr', 'balancer').split('.').slice(0, 3).join('.');
    const src = bridgeSources(parseSources(options.src).length, subnet);
    return runC1m({ ...options, src: `${src[0]}-${src.at(-1)}`, routers: REPLICAS, replicas: REPLICAS, partitions: options.partitions ?? 2 }, onSimulatedHosts(sysctl));
  });
}

async function main(): Promise<void> {
  const command = addOptions(new Command('million-hosts'), 'run').option('--sysctl', 'apply ./sysctl.conf in the root namespace and in every host (the root namespace keeps it)');
  command.parse();
  const opts = command.opts<OptionsOf<'run'> & { sysctl?: boolean }>();
  const why = cannotRun();
  if (why) {
    console.error(`million-hosts: ${why}`);
    process.exit(2);
  }
  if (opts.sysctl) applySysctl();
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  process.once('SIGTERM', () => stop.abort());
  const out = opts.out ?? `reports/hosts-${new Date().toISOString().slice(0, 19).replace(/:/g, '-')}`;
  const result = await runOnSimulatedHosts({ ...opts, db: '', out, signal: stop.signal }, opts.sysctl);
  console.log(JSON.stringify({ status: result.status, error: result.error, report: `${result.dir}/report.md` }));
  process.exit(result.status === 'complete' ? 0 : 1);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
