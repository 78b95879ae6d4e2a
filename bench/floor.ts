/**
 * The floor under c1m's deliveries on this box: the C flood holds the same
 * streams as in `c1m run`, but they are served by loadgen/floor.c, a bare C
 * server with nothing of c1m in it (no bus, no router, no JavaScript), split
 * into processes under the open-file limit like c1m's edges and writing
 * one-chunk messages to random streams at fixed rates. What the kernel, the
 * loopback and the load generator alone cost per delivered chunk, and what
 * delivery latency they allow: c1m's figures at the same N are read against it.
 *
 *   npm run bench:floor -- --connections 1000000 --rates 20000,40000,70000 --seconds 20
 */
import { Command, Option } from 'commander';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { cpus, setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { integer } from '../server/options.js';
import { busWindowMs } from '../cluster/messages.js';
import { freePort } from '../cluster/supervisor.js';
import { openFileLimit } from '../server/limits.js';
import { latencySummary, newHistogram, parseSources, rowsFromRanges, runFlood, type FloodTotals } from '../loadgen/flood.js';
import { childrenOf, commOf, cpuSplitOf, machineCores, machineTicks } from '../loadgen/server-process.js';

const FLOOR_SERVER = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../dist/bench/floor-server' : './floor-server', import.meta.url));
/** As c1m's edges (cluster/run.ts), so the flood meets the same scheduling. */
const SERVER_NICE = 5;
/** Of a floor server's descriptors (less a few of its own), the share that holds streams: the rest is slack for SO_REUSEPORT's uneven hashing. */
const SERVER_FILL = 0.97;

const opts = new Command('bench-floor')
  .addOption(new Option('--connections <n>', 'streams to hold').default(1_000_000).argParser(integer('connections', 1)))
  .addOption(new Option('--rates <list>', 'delivered chunks/s to try, in steps').default('20000,40000,70000,100000'))
  .addOption(new Option('--seconds <s>', 'measured seconds per rate').default(20).argParser(integer('seconds', 1)))
  .addOption(new Option('--settle <s>', 'seconds at each rate before measuring').default(3).argParser(integer('settle', 0)))
  .addOption(new Option('--batch-ms <ms>', "each server writes what fell due this often (default: c1m's bus window for as many edges)").argParser(integer('batch ms', 1)))
  .addOption(new Option('--src <addrs>', 'flood source addresses').default('127.0.1.1-127.0.1.40'))
  .addOption(new Option('--rate <n>', 'connects per second during the ramp').default(12000).argParser(integer('rate', 1)))
  .addOption(new Option('--per-server <n>', 'streams per floor server at most (default: the open-file limit, less slack for uneven SO_REUSEPORT hashing)').argParser(integer('per server', 1)))
  .addOption(new Option('--read-every <ms>', 'flood workers read every MS once all streams are open (0: woken by each chunk), as in c1m run').default(50).argParser(integer('read every', 0)))
  .addOption(new Option('--hold <s>', 'seconds held idle before the first rate (the machine baseline)').default(10).argParser(integer('hold', 1)))
  .parse()
  .opts<{ connections: number; rates: string; seconds: number; settle: number; batchMs?: number; src: string; rate: number; perServer?: number; readEvery: number; hold: number }>();

const rates = opts.rates.split(',').map((r) => integer('rate', 1)(r.trim()));
const perServer = opts.perServer ?? Math.floor((openFileLimit() - 64) * SERVER_FILL);
const serverCount = Math.ceil(opts.connections / perServer);
const batchMs = opts.batchMs ?? busWindowMs(serverCount);
const port = await freePort('127.0.0.1');
const coreCount = cpus().length;

interface Server {
  child: ChildProcessByStdio<Writable, Readable, null>;
  written: number;
  blocked: number;
}
const servers: Server[] = await Promise.all(
  Array.from({ length: serverCount }, () => {
    const child = spawn(FLOOR_SERVER, [String(port), String(batchMs), String(perServer)], { stdio: ['pipe', 'pipe', 'inherit'] });
    if (child.pid) setPriority(child.pid, SERVER_NICE);
    const server: Server = { child, written: 0, blocked: 0 };
    return new Promise<Server>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`floor server exited with ${code} before listening`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (line.startsWith('L ')) resolve(server);
        const s = /^S open=\d+ chunks=(\d+) blocked=(\d+)/.exec(line);
        if (s) [server.written, server.blocked] = [Number(s[1]), Number(s[2])];
      });
    });
  }),
);
const serverPids = servers.map((s) => s.child.pid!);
console.error(`${serverCount} floor servers on 127.0.0.1:${port}, ${perServer} streams each at most, writing every ${batchMs} ms`);

let totals: FloodTotals | undefined;
let histogram = newHistogram();
let onRamped: () => void;
const ramped = new Promise<void>((resolve) => (onRamped = resolve));
const stop = new AbortController();
const planned = opts.connections / opts.rate + opts.hold + rates.length * (opts.settle + opts.seconds);
const flood = runFlood({
  host: '127.0.0.1',
  port,
  rows: rowsFromRanges(parseSources(opts.src), [1, opts.connections]),
  ports: [10000, 65535],
  rate: opts.rate,
  concurrency: 2000,
  duration: 3 * planned + 120, // ended by `stop` below; this only bounds it
  maxSeconds: 3 * planned + 180,
  stop: stop.signal,
  onReport: (t) => {
    totals = t;
    if (t.ramped) onRamped();
  },
  readEveryMs: opts.readEvery,
  onDelivery: (micros, count) => histogram.recordValueWithCount(micros, count),
});

/** CPU seconds so far of each role, the machine's ticks, and the counters. */
function snapshot() {
  const sum = (pids: number[]) =>
    pids.reduce(
      (n, pid) => {
        try {
          const { user, system } = cpuSplitOf(pid);
          return { user: n.user + user, system: n.system + system };
        } catch {
          return n; // exited
        }
      },
      { user: 0, system: 0 },
    );
  return {
    at: performance.now(),
    servers: sum(serverPids),
    flood: sum(childrenOf(process.pid).filter((pid) => commOf(pid) === 'flood-worker')),
    machine: machineTicks(),
    received: totals?.chunks ?? 0,
    written: servers.reduce((n, s) => n + s.written, 0),
    blocked: servers.reduce((n, s) => n + s.blocked, 0),
  };
}
type Snapshot = ReturnType<typeof snapshot>;

/** Cores used between two snapshots, per role and for the machine (its ticks split as /proc/stat does). */
function usage(a: Snapshot, b: Snapshot) {
  const seconds = (b.at - a.at) / 1000;
  const cores = (x: number, y: number) => +((y - x) / seconds).toFixed(3);
  return {
    seconds: +seconds.toFixed(2),
    servers: { user: cores(a.servers.user, b.servers.user), system: cores(a.servers.system, b.servers.system) },
    flood: { user: cores(a.flood.user, b.flood.user), system: cores(a.flood.system, b.flood.system) },
    machine: machineCores(a.machine, b.machine),
    receivedPerSecond: Math.round((b.received - a.received) / seconds),
    writtenPerSecond: Math.round((b.written - a.written) / seconds),
    blocked: b.blocked - a.blocked,
  };
}

const steps: unknown[] = [];
let idle: ReturnType<typeof usage> | undefined;
try {
  await Promise.race([ramped, flood.then(() => Promise.reject(new Error('the flood ended before every stream was open')))]);
  console.error(`held: ${totals!.open} open, ${totals!.failed} failed; idle for ${opts.hold} s`);
  const h0 = snapshot();
  await sleep(opts.hold * 1000);
  idle = usage(h0, snapshot());
  console.error(`idle: machine ${idle.machine.busy} cores busy`);
  for (const rate of rates) {
    for (const s of servers) s.child.stdin.write(`R ${rate / serverCount}\n`);
    await sleep(opts.settle * 1000);
    const a = snapshot();
    histogram = newHistogram();
    await sleep(opts.seconds * 1000);
    const u = usage(a, snapshot());
    const dead = servers.filter((s) => s.child.exitCode !== null || s.child.signalCode !== null);
    if (dead.length > 0) throw new Error(`${dead.length} floor server(s) exited during the run; their streams are gone`);
    const delivery = latencySummary(histogram);
    const perChunk = (cores: number) => +((cores * 1e6) / Math.max(1, u.receivedPerSecond)).toFixed(1);
    const step = { rate, ...u, deliveryMs: delivery, machineMicrosPerChunk: perChunk(u.machine.busy), aboveIdleMicrosPerChunk: perChunk(u.machine.busy - idle.machine.busy) };
    steps.push(step);
    console.error(
      `${rate} chunks/s asked: ${u.writtenPerSecond} written, ${u.receivedPerSecond} received/s, delivery p50 ${delivery.p50} p99 ${delivery.p99} ms; ` +
        `machine ${u.machine.busy} cores (${step.machineMicrosPerChunk} us/chunk, ${step.aboveIdleMicrosPerChunk} above idle); servers ${u.servers.user}+${u.servers.system}, flood ${u.flood.user}+${u.flood.system} cores (user+system)`,
    );
    if (u.machine.busy > coreCount - 0.05 && delivery.p99 > 1000) break; // saturated: higher rates only queue
  }
} finally {
  for (const s of servers) s.child.stdin.write('R 0\n');
  await sleep(1500); // every server's last report (each second) counts all it wrote
  const written = servers.reduce((n, s) => n + s.written, 0);
  stop.abort();
  const summary = await flood.catch((err: Error) => ({ error: err.message, chunks: undefined }));
  for (const s of servers) s.child.stdin.end();
  const kill = setTimeout(() => servers.forEach((s) => s.child.kill('SIGKILL')), 5000);
  await Promise.all(servers.map((s) => (s.child.exitCode === null ? new Promise((resolve) => s.child.once('exit', resolve)) : undefined)));
  clearTimeout(kill);
  console.log(JSON.stringify({ connections: opts.connections, servers: serverCount, batchMs, machineCores: coreCount, idle, steps, chunks: { written, received: summary.chunks }, flood: summary }, null, 1));
}
