/**
 * The core benchmark: one c1m server process on loopback, measured from the
 * outside. Prints RSS per idle connection, connections accepted per second,
 * delivered chunks per second (one send fanning out to many, and a stream of
 * sends to random users), getSubscribers latency, and the delivery latency of
 * unicast: sends at a fixed rate to random single users, timed by the C flood.
 *
 *   npm run bench -- --connections 15000 --seconds 10
 *   npm run bench -- --unicast-only --unicast-rate 2000
 *   npm run bench -- --transport sse     (or ws; default chunked)
 *   npm run bench -- --heartbeat 25 --idle-seconds 60   (what idle streams cost at that heartbeat: bytes/s and server CPU)
 *   npm run bench -- --idle-only --topics 5   (idle streams only, each listening to 5 of 1,000 topics)
 */
import autocannon from 'autocannon';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { pack } from 'msgpackr';
import type { Pair } from '../subsmanager/pairs.js';
import { openStore } from '../subsmanager/store.js';
import { hold, percentile, post, randomSends } from './probe.js';
import type { HolderCommand, HolderReply } from './holder.js';
import { cpuOf, cpuSplitOf, rssOf, spawnServer } from '../loadgen/server-process.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULTS } from '../server/defaults.js';
import { tableOption } from '../cli/options.js';

/** The topics idle streams listen to with --topics: as in the million, each shared by many streams. */
const HELD_TOPICS = 1000;

const opts = new Command('bench')
  .addOption(new Option('--connections <n>', 'idle connections to hold').default(15000).argParser(Number))
  .addOption(new Option('--fanout <n>', 'subscribers of the user in the fan-out test').default(1000).argParser(Number))
  .addOption(new Option('--friends <n>', 'random subscribers per user in the random-send test').default(15).argParser(Number))
  .addOption(new Option('--seconds <n>', 'duration of each send test').default(10).argParser(Number))
  .addOption(new Option('--sources <n>', 'loopback source addresses to spread connections over').default(8).argParser(Number))
  .addOption(new Option('--unicast-rate <n>', 'sends/s to random single users in the latency test (0: skip it)').default(2000).argParser(Number))
  .option('--unicast-only', 'run only the unicast latency test')
  .addOption(new Option('--history-seconds <s>', "the server's --history-seconds (0: no history)").default(DEFAULTS.historySeconds).argParser(Number))
  // Off by default: the send tests count every byte the streams receive, and wait until they stop.
  .addOption(new Option('--heartbeat <s>', "the server's --heartbeat (with one, only the idle streams are measured)").default(0).argParser(Number))
  .addOption(new Option('--idle-seconds <n>', 'hold the idle streams this long and report what they cost: bytes/s and server CPU (0: skip)').default(0).argParser(Number))
  .addOption(tableOption('loadgen flood', 'transport'))
  .addOption(new Option('--topics <k>', `each idle stream also listens to k of ${HELD_TOPICS} topics (?topics=)`).default(0).argParser(Number))
  .option('--idle-only', 'measure the idle streams only (memory, accepts), no send test')
  .parse()
  .opts<{ connections: number; fanout: number; friends: number; seconds: number; sources: number; unicastRate: number; unicastOnly?: boolean; historySeconds: number; heartbeat: number; idleSeconds: number; transport: 'chunked' | 'sse' | 'ws'; topics: number; idleOnly?: boolean }>();

const HOST = '127.0.0.1';
const MESSAGE = 'm'.repeat(31); // 32 bytes with its '\n'
/** One message as it reaches a holder's socket: an HTTP chunk of the message and its '\n', of an SSE event, or a WebSocket frame (2-byte header). */
const EVENT_BYTES = 'data: '.length + MESSAGE.length + '\n\n'.length;
const CHUNK_WIRE_BYTES = {
  chunked: '20\r\n'.length + MESSAGE.length + 1 + '\r\n'.length,
  sse: `${EVENT_BYTES.toString(16)}\r\n`.length + EVENT_BYTES + '\r\n'.length,
  ws: 2 + 'message\n'.length + MESSAGE.length,
}[opts.transport];
/** Long enough for V8's memory reducer to run once a process goes quiet. */
const SETTLE_MS = 12_000;


class Holder {
  readonly child = fork(join(import.meta.dirname, 'holder.js'), { stdio: 'inherit' });
  request(cmd: HolderCommand): Promise<HolderReply> {
    return new Promise((resolve) => {
      this.child.once('message', (reply) => resolve(reply as HolderReply));
      this.child.send(cmd);
    });
  }
  async bytes(): Promise<number> {
    return ((await this.request({ type: 'bytes' })) as Extract<HolderReply, { type: 'bytes' }>).bytes;
  }
}

async function subscribe(apiPort: number, pairs: Pair[]) {
  for (let i = 0; i < pairs.length; i += 50_000) await post(apiPort, '/subscriptions', pack(pairs.slice(i, i + 50_000)), 'application/msgpack');
}

async function stats(apiPort: number) {
  return (await fetch(`http://${HOST}:${apiPort}/stats`)).json() as Promise<{ connections: number; chunks: number; sends: number; slowConsumerCloses: number; memory: { heapUsed: number } }>;
}

/** Runs autocannon against POST /send/<id>, then waits for the holder to stop receiving; returns delivered chunks/s and sends/s. */
async function sendTest(apiPort: number, server: ChildProcess, holder: Holder, pickUser: () => number) {
  const before = { bytes: await holder.bytes(), server: await stats(apiPort), cpu: cpuSplitOf(server.pid!) };
  const started = performance.now();
  const result = await autocannon({
    url: `http://${HOST}:${apiPort}`,
    connections: 4,
    pipelining: 4,
    duration: opts.seconds,
    requests: [{ method: 'POST', body: MESSAGE, setupRequest: (req) => ({ ...req, path: `/send/${pickUser()}` }) }],
  });
  let bytes = await holder.bytes();
  let lastChange = performance.now();
  while (performance.now() - lastChange < 300) {
    await sleep(50);
    const now = await holder.bytes();
    if (now !== bytes) [bytes, lastChange] = [now, performance.now()];
  }
  const seconds = (lastChange - started) / 1000;
  const after = await stats(apiPort);
  const received = (bytes - before.bytes) / CHUNK_WIRE_BYTES;
  const cpu = cpuSplitOf(server.pid!);
  const serverCpu = cpu.user - before.cpu.user + cpu.system - before.cpu.system;
  return {
    seconds: +seconds.toFixed(2),
    serverCpuSeconds: +serverCpu.toFixed(2),
    serverKernelShare: +((cpu.system - before.cpu.system) / serverCpu).toFixed(2),
    serverCpuMicrosPerChunk: +((serverCpu * 1e6) / received).toFixed(2),
    sends: after.sends - before.server.sends,
    sendsPerSecond: Math.round((after.sends - before.server.sends) / seconds),
    serverChunks: after.chunks - before.server.chunks,
    receivedChunks: Math.round(received),
    deliveredChunksPerSecond: Math.round(received / seconds),
    non2xx: result.non2xx,
    errors: result.errors,
    slowConsumerCloses: after.slowConsumerCloses,
  };
}

/**
 * Unicast latency: a fresh server, its streams held by the C flood (which
 * times each message from the `t=` stamp msggen writes into it to the chunk's
 * arrival in the socket), and msggen in a process of its own sending at a
 * fixed rate to random single users who have no subscribers: one chunk per
 * send, nothing to coalesce, so every send pays the whole path from the API to
 * the socket. The flood's own lag to read a chunk is reported apart.
 */
async function unicast(dir: string) {
  const server = await spawnServer(['--db', join(dir, 'unicast.db'), '--history-seconds', String(opts.historySeconds), '--heartbeat', '0']);
  const holder = hold(server.port, 1, opts.connections, 10_000, opts.transport);
  try {
    const opened = await holder.opened();
    await sleep(2000); // the ramp's last collections and reports out of the way before the clock starts
    // The sender at SCHED_IDLE with 64 connections, so it neither takes a core the server wants nor queues a request behind a slow answer.
    const sender = { policy: 'idle' as const, connections: 64 };
    const sends = await randomSends(server.apiPort, opts.connections, opts.unicastRate, opts.seconds, [server.child.pid!], sender);
    return { streams: opened.welcomed, ...sends, probeReadLagMs: (await holder.close())?.readLagMs };
  } finally {
    await holder.close(); // the same promise when it was closed above; here for the error path
    server.child.kill('SIGTERM');
    await new Promise((r) => server.child.once('exit', r));
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-bench-'));
  console.log(`machine: ${cpus().length} x ${cpus()[0].model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; transport ${opts.transport}; topics per stream ${opts.topics}`);
  try {
    const core = opts.unicastOnly ? {} : await throughput(dir);
    const latency = opts.unicastRate > 0 && !opts.idleOnly ? { unicast: await unicast(dir) } : {};
    if (latency.unicast) console.log(`unicast, ${opts.unicastRate} sends/s to random single users:`, latency.unicast);
    console.log(JSON.stringify({ ...core, ...latency }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What idle streams cost over --idle-seconds: the heartbeats written (their bytes as framed, before HTTP's chunk framing) and the server's CPU. */
async function idleCost(apiPort: number, pid: number) {
  const written = async () => Object.values(((await stats(apiPort)) as unknown as { transports: Record<string, { chunks: number; bytes: number }> }).transports).reduce((n, t) => ({ chunks: n.chunks + t.chunks, bytes: n.bytes + t.bytes }), { chunks: 0, bytes: 0 });
  const [before, cpuBefore, start] = [await written(), cpuOf(pid), performance.now()];
  await sleep(opts.idleSeconds * 1000);
  const [after, cpuAfter, seconds] = [await written(), cpuOf(pid), (performance.now() - start) / 1000];
  return {
    seconds: +seconds.toFixed(1),
    heartbeatsPerSecond: Math.round((after.chunks - before.chunks) / seconds),
    bytesPerSecond: Math.round((after.bytes - before.bytes) / seconds),
    serverCpuPercentOfCore: +((100 * (cpuAfter - cpuBefore)) / seconds).toFixed(2),
  };
}

/** Memory and accept rate of idle streams, chunks/s of fan-out and random sends, and getSubscribers, on one server with Node-held streams. */
async function throughput(dir: string) {
  const db = join(dir, 'bench.db');
  const n = opts.connections;
  const sources = Array.from({ length: opts.sources }, (_, i) => `127.0.1.${i + 1}`);
  const server = await spawnServer(['--db', db, '--history-seconds', String(opts.historySeconds), '--heartbeat', String(opts.heartbeat)]);
  const holder = new Holder();
  try {
    // Warm up with a third of the connections, opened just like the rest: that grows
    // V8's young generation to its ramp-up size (a fixed cost, tens of MB at most) and
    // JITs the accept path, so the delta that follows is the marginal cost per connection.
    const warmUp = Math.round(n / 3);
    await holder.request({ type: 'open', host: HOST, port: server.port, firstId: 1, count: warmUp, sources, concurrency: 256, transport: opts.transport, topics: { perStream: opts.topics, of: HELD_TOPICS } });
    await sleep(SETTLE_MS);
    const rssBefore = rssOf(server.child.pid!);
    const heapBefore = (await stats(server.apiPort)).memory.heapUsed;
    const cpuBefore = { server: cpuOf(server.child.pid!), holder: cpuOf(holder.child.pid!) };
    const opened = (await holder.request({ type: 'open', host: HOST, port: server.port, firstId: warmUp + 1, count: n - warmUp, sources, concurrency: 256, transport: opts.transport, topics: { perStream: opts.topics, of: HELD_TOPICS } })) as Extract<HolderReply, { type: 'opened' }>;
    const accepted = opened.opened - warmUp;
    const serverCpu = cpuOf(server.child.pid!) - cpuBefore.server;
    const holderCpu = cpuOf(holder.child.pid!) - cpuBefore.holder;
    const rssRampedUp = rssOf(server.child.pid!);
    await sleep(SETTLE_MS);
    const rssAfter = rssOf(server.child.pid!);
    const after = await stats(server.apiPort);
    const idle = {
      connections: after.connections,
      failed: opened.failed,
      acceptedPerSecond: Math.round(accepted / (opened.ms / 1000)),
      serverCpuMicrosPerAccept: Math.round((serverCpu * 1e6) / accepted),
      holderCpuMicrosPerConnect: Math.round((holderCpu * 1e6) / accepted),
      serverRssBeforeMiB: +(rssBefore / 2 ** 20).toFixed(1),
      serverRssAfterMiB: +(rssAfter / 2 ** 20).toFixed(1),
      rssBytesPerIdleConnection: Math.round((rssAfter - rssBefore) / accepted),
      rssBytesPerConnectionRightAfterRampUp: Math.round((rssRampedUp - rssBefore) / accepted),
      // The JS heap alone, after the settle's collections: far less noisy than RSS, and what a stream's objects (its topics) cost.
      heapBytesPerIdleConnection: Math.round((after.memory.heapUsed - heapBefore) / accepted),
    };
    console.log('idle connections:', idle);
    if (opts.idleSeconds > 0) console.log(`idle streams at --heartbeat ${opts.heartbeat}:`, await idleCost(server.apiPort, server.child.pid!));
    if (opts.heartbeat > 0 || opts.idleOnly) {
      await holder.request({ type: 'close' });
      return { idle };
    }

    const fanoutPairs: Pair[] = Array.from({ length: Math.min(opts.fanout, n - 1) }, (_, i) => [i + 2, 1]);
    await subscribe(server.apiPort, fanoutPairs);
    const fanout = await sendTest(server.apiPort, server.child, holder, () => 1);
    console.log(`one send to ${fanoutPairs.length} subscribers + the sender:`, fanout);

    const randomPairs: Pair[] = [];
    for (let user = 2; user <= n; user++) {
      for (let k = 0; k < opts.friends; k++) randomPairs.push([1 + Math.floor(Math.random() * n), user]);
    }
    await subscribe(server.apiPort, randomPairs);
    const random = await sendTest(server.apiPort, server.child, holder, () => 2 + Math.floor(Math.random() * (n - 1)));
    console.log(`sends to random users (~${opts.friends} subscribers each):`, random);

    await holder.request({ type: 'close' });
    server.child.kill('SIGTERM');
    await new Promise((r) => server.child.once('exit', r));

    const store = openStore(db, { readonly: true });
    const times: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      const user = 1 + Math.floor(Math.random() * n);
      const t0 = process.hrtime.bigint();
      store.getSubscribers(user);
      times.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    times.sort((a, b) => a - b);
    const lookups = { rows: store.count(), p50Micros: +percentile(times, 0.5).toFixed(1), p99Micros: +percentile(times, 0.99).toFixed(1) };
    store.close();
    console.log('getSubscribers (random users):', lookups);
    return { idle, fanout, random, lookups };
  } finally {
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  }
}

await main();
process.exit(0);
