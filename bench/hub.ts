/**
 * The hub fan-out against the floor: one send reaching every held stream (all
 * follow one hub user), served in turn by bench/floor.c (the reference: a bare
 * C epoll server, in as many processes as the cluster has edges), by `c1m
 * server` (one process) and by `c1m cluster` (2 edges), in interleaved rounds,
 * the streams held by the C flood. For each: delivered chunks/s and server CPU
 * per delivery over sends back to back, and the delivery latency of single
 * sends (each delivered to every stream before the next).
 *
 * With `--subject topic`, c1m's targets deliver the same sends to a topic all
 * the streams listen to (?topics=room:1) instead of a user they all follow;
 * `--subject user,topic` runs both in each round, for the comparison.
 *
 *   npm run bench:hub -- --streams 15000 --rounds 3 --transport chunked
 *   npm run bench:hub -- --streams 100000 --edges 6 --targets cluster --subject user,topic
 *   C1M_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=/tmp/prof' npm run bench:hub -- --targets server --rounds 1
 */
import { Command, Option } from 'commander';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, setPriority, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { tableOption } from '../cli/options.js';
import { integer } from '../server/options.js';
import { freePort } from '../cluster/supervisor.js';
import { spawnCluster, spawnServer, type ClusterProcess, type ServerProcess } from '../loadgen/server-process.js';
import { DEFAULTS } from '../server/defaults.js';
import type { Transport } from '../server/stream.js';
import { floodTopic } from '../loadgen/flood.js';
import { broadcast, hold, sendTo, subscribeAll, type HubSend } from './probe.js';

const FLOOR_SERVER = fileURLToPath(new URL('./floor-server', import.meta.url));
const TARGETS = ['floor', 'server', 'cluster'] as const;
type Target = (typeof TARGETS)[number];
/** As c1m's edges (cluster/run.ts) and bench:floor's servers, so the flood and the box's other work meet the same scheduling. */
const FLOOR_NICE = 5;

const opts = new Command('bench-hub')
  .addOption(new Option('--streams <n>', 'streams held, every one following the hub').default(15000).argParser(integer('streams', 1)))
  .addOption(new Option('--sends <n>', 'single sends (latency), then as many back to back (chunks/s, CPU)').default(20).argParser(integer('sends', 1)))
  .addOption(new Option('--rounds <n>', 'rounds, each running every target in turn').default(3).argParser(integer('rounds', 1)))
  .addOption(new Option('--edges <n>', "the cluster's edges, and the floor's processes").default(2).argParser(integer('edges', 1)))
  .addOption(new Option('--targets <list>', `which servers, in this order each round: ${TARGETS.join(',')}`).default([...TARGETS]).argParser((t: string) => t.split(',')))
  .addOption(new Option('--history-seconds <s>', "c1m's --history-seconds (0: no history)").default(DEFAULTS.historySeconds).argParser(integer('history seconds', 0)))
  .addOption(new Option('--read-every <ms>', 'flood workers read every MS once all streams are open (0: woken by each chunk), as in bench:floor and c1m run').default(50).argParser(integer('read every', 0)))
  .addOption(new Option('--subject <list>', "what c1m's targets send to: user (a hub all streams follow), topic (one all streams listen to), or both in turn").default(['user']).argParser((t: string) => t.split(',')))
  .addOption(tableOption('loadgen flood', 'transport'))
  .parse()
  .opts<{ streams: number; sends: number; rounds: number; edges: number; targets: string[]; subject: string[]; historySeconds: number; readEvery: number; transport: Transport }>();

const unknown = opts.targets.filter((t) => !(TARGETS as readonly string[]).includes(t));
if (unknown.length > 0) throw new Error(`unknown target ${unknown.join(', ')} (${TARGETS.join(', ')})`);
const SUBJECTS = ['user', 'topic'] as const;
type SubjectKind = (typeof SUBJECTS)[number];
if (!opts.subject.every((k) => (SUBJECTS as readonly string[]).includes(k))) throw new Error(`--subject takes ${SUBJECTS.join(', ')}`);
/** The topic every stream listens to with --subject topic: the flood's first of one (floodTopic). */
const TOPIC = floodTopic(0, 1);
/** Node flags for c1m's processes only (NODE_OPTIONS would reach this script and msggen too): a profile of the server side. */
const c1mEnv = process.env.C1M_NODE_OPTIONS ? { NODE_OPTIONS: process.env.C1M_NODE_OPTIONS } : {};

/** A server under test: how to send to the hub, the pids whose CPU counts, and how to stop it. */
interface Served {
  port: number;
  send: HubSend;
  pids: number[];
  stop(): Promise<void>;
}

/** `--edges` floor servers on one port (SO_REUSEPORT); "B" on their stdin writes a chunk to every stream each holds. */
async function floor(): Promise<Served> {
  const port = await freePort('127.0.0.1');
  const children = await Promise.all(
    Array.from({ length: opts.edges }, () => {
      const child = spawn(FLOOR_SERVER, [String(port), '1000', String(opts.streams)], { stdio: ['pipe', 'pipe', 'inherit'] });
      if (child.pid) setPriority(child.pid, FLOOR_NICE);
      return new Promise<ChildProcessByStdio<Writable, Readable, null>>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code) => reject(new Error(`floor server exited with ${code} before listening`)));
        createInterface({ input: child.stdout }).on('line', (line) => line.startsWith('L ') && resolve(child));
      });
    }),
  );
  return {
    port,
    send: async () => {
      for (const child of children) child.stdin.write('B\n');
    },
    pids: children.map((c) => c.pid!),
    async stop() {
      await Promise.all(children.map((c) => new Promise((resolve) => (c.once('exit', resolve), c.stdin.end()))));
    },
  };
}

async function c1m(target: 'server' | 'cluster', db: string, hub: number | string): Promise<Served> {
  const args = ['--db', db, '--history-seconds', String(opts.historySeconds), '--heartbeat', '0']; // the flood counts heartbeats as chunks
  let p: ServerProcess | ClusterProcess;
  let pids: number[];
  if (target === 'server') {
    p = await spawnServer(args, c1mEnv);
    pids = [p.child.pid!];
  } else {
    const c = await spawnCluster([...args, '--edges', String(opts.edges), '--log-level', 'warn'], c1mEnv);
    pids = [...c.edges.map((e) => e.pid), c.pids['router-0'], c.pids.nats];
    p = c;
  }
  const child = p.child;
  return {
    port: p.port,
    send: sendTo(p.apiPort, hub),
    pids,
    async stop() {
      await new Promise((resolve) => (child.once('exit', resolve), child.kill('SIGTERM')));
    },
  };
}

async function measure(target: Target, subject: SubjectKind, dir: string) {
  const hub = subject === 'topic' ? TOPIC : opts.streams + 1;
  const db = join(dir, `${target}.db`);
  rmSync(db, { force: true });
  if (target !== 'floor' && subject === 'user') subscribeAll(db, opts.streams + 1, opts.streams);
  const served = target === 'floor' ? await floor() : await c1m(target, db, hub);
  const listening = target !== 'floor' && subject === 'topic' ? 1 : 0;
  const holder = hold(served.port, 1, opts.streams, 10_000, target === 'floor' ? 'chunked' : opts.transport, opts.readEvery, listening);
  try {
    const opened = await holder.opened();
    if (opened.welcomed < opts.streams) throw new Error(`${target}: ${opened.welcomed} of ${opts.streams} streams welcomed`);
    await sleep(2000); // the ramp's last collections out of the way
    return await broadcast(served.send, opts.streams, opts.sends, [holder], served.pids);
  } finally {
    await holder.close();
    await served.stop();
  }
}

const dir = mkdtempSync(join(tmpdir(), 'c1m-bench-hub-'));
console.log(`machine: ${cpus().length} x ${cpus()[0].model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; ${opts.streams} streams, transport ${opts.transport} (the floor: chunked)`);
const results: Record<string, { chunksPerSecond: number; cpuMicros: number; p99: number }[]> = {};
try {
  for (let round = 0; round < opts.rounds; round++)
    for (const target of opts.targets as Target[])
      for (const subject of target === 'floor' ? (['user'] as const) : (opts.subject as SubjectKind[])) {
        const r = await measure(target, subject, dir);
        const name = target === 'floor' || opts.subject.length === 1 ? target : `${target} (${subject})`;
        console.log(JSON.stringify({ round, target: name, ...r }));
        (results[name] ??= []).push({ chunksPerSecond: r.burst.deliveredChunksPerSecond, cpuMicros: r.burst.cpuMicrosPerDelivery, p99: r.oneSendLatencyMs.p99 });
      }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const range = (values: number[]) => `${Math.min(...values)}-${Math.max(...values)}`;
console.table(
  Object.entries(results).map(([target, runs]) => ({
    target,
    'delivered chunks/s': range(runs.map((r) => r.chunksPerSecond)),
    'server CPU µs per delivery': range(runs.map((r) => r.cpuMicros)),
    'one send: delivery p99 ms': range(runs.map((r) => r.p99)),
  })),
);
process.exit(0);
