/**
 * The bus on its own: one nats-server, one publisher process, one subscriber
 * process, ~300-byte deliver messages (the size of a router's batch to one
 * edge) sent through NatsBus. Reports the subscriber's CPU per message, messages/s
 * and publish-to-handler latency, at a fixed rate and as fast as possible, and
 * the RSS of a connected, idle process.
 *
 *   npm run bench:bus -- --rate 2000 --seconds 10 --burst 100000
 *   node --no-opt dist/bench/bus.js    (node flags apply to every process)
 */
import { Command, Option } from 'commander';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { NatsBus } from '../cluster/nats-bus.js';
import { freePort } from '../cluster/supervisor.js';
import { spawnNatsServer } from '../loadgen/server-process.js';
import { epochMs } from '../router/latency.js';

const SUBJECT = 'bench.deliver';
const DONE = 'bench.done';
const CHUNK = new Uint8Array(240).fill(120);

/** A deliver batch as a router sends it to an edge: one chunk, a few targets, when it was sent. */
const deliver = () => ({ t: 'deliver' as const, chunks: [CHUNK], targets: [[1, 2, 3, 4, 5, 6, 7, 8]], sentAt: [epochMs()] });

async function subscriber(nats: string): Promise<void> {
  const bus = await NatsBus.connect(nats, 'bench-sub');
  let count = 0;
  let cpu = process.cpuUsage();
  let started = 0;
  let last = 0;
  let latencies: number[] = [];
  const reset = () => {
    count = 0;
    latencies = [];
    cpu = process.cpuUsage();
    started = performance.now();
  };
  bus.subscribe(SUBJECT, (message) => {
    if (message.t !== 'deliver') return;
    if (count === 0) reset();
    count++;
    last = performance.now();
    latencies.push(epochMs() - message.sentAt[0]);
  });
  // At the end of each phase: the phase's figures on stdout for the parent, then an answer, so the publisher goes on.
  bus.subscribe(DONE, (_message, replyTo) => {
    const used = process.cpuUsage(cpu);
    const seconds = (last - started) / 1000;
    latencies.sort((a, b) => a - b);
    const at = (q: number) => +(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0).toFixed(3);
    console.log(JSON.stringify({ rssMiB: +(process.memoryUsage().rss / 2 ** 20).toFixed(1), received: count, cpuUsPerMessage: +((used.user + used.system) / count).toFixed(2), perSecond: Math.round(count / seconds), latencyMs: { p50: at(0.5), p99: at(0.99), max: at(1) } }));
    if (replyTo) bus.publish(replyTo, { t: 'sent', delivered: count });
    count = 0;
  });
  // Tells the parent the subscriptions are in place, and this process's idle RSS.
  setTimeout(() => console.log(JSON.stringify({ ready: true, rss: process.memoryUsage().rss })), 2000);
}

async function publisher(nats: string, rate: number, seconds: number, burst: number): Promise<void> {
  const bus = await NatsBus.connect(nats, 'bench-pub');
  const endPhase = async () => {
    await sleep(500); // the last messages reach the subscriber before the question does
    await bus.request(DONE, { t: 'sync' }, 10_000);
  };
  // Fixed rate: every millisecond, what is due by now.
  const total = rate * seconds;
  let sent = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000));
    for (; sent < due; sent++) bus.publish(SUBJECT, deliver());
    await sleep(1);
  }
  const used = process.cpuUsage(cpu);
  const publisherCpuUsPerMessage = +((used.user + used.system) / total).toFixed(2);
  await endPhase();
  // As fast as possible: slices of 500, so the socket drains between them.
  for (sent = 0; sent < burst; ) {
    for (const end = sent + 500; sent < end; sent++) bus.publish(SUBJECT, deliver());
    await new Promise((resolve) => setImmediate(resolve));
  }
  await endPhase();
  console.log(JSON.stringify({ publisherCpuUsPerMessage }));
  await bus.close();
}

function child(args: string[]): { process: ChildProcess; line: () => Promise<Record<string, unknown>> } {
  const proc = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  return {
    process: proc,
    line: async () => {
      const next = await lines.next();
      if (next.done) throw new Error(`${args[0]} exited without reporting`);
      return JSON.parse(next.value);
    },
  };
}

async function main(): Promise<void> {
  const opts = new Command('bench-bus')
    .argument('[role]', 'internal: sub or pub')
    .argument('[nats]')
    .addOption(new Option('--rate <n>', 'messages per second in the fixed-rate phase').default(2000).argParser(Number))
    .addOption(new Option('--seconds <n>', 'length of the fixed-rate phase').default(10).argParser(Number))
    .addOption(new Option('--burst <n>', 'messages sent as fast as possible').default(100_000).argParser(Number))
    .parse();
  const [role, nats] = opts.args;
  const o = opts.opts<{ rate: number; seconds: number; burst: number }>();
  if (role === 'sub') return subscriber(nats);
  if (role === 'pub') return publisher(nats, o.rate, o.seconds, o.burst);

  const port = await freePort('127.0.0.1');
  const server = await spawnNatsServer('127.0.0.1', port);
  try {
    const url = `nats://127.0.0.1:${port}`;
    const sub = child(['sub', url]);
    const { rss } = await sub.line();
    const pub = child(['pub', url, '--rate', String(o.rate), '--seconds', String(o.seconds), '--burst', String(o.burst)]);
    const [fixed, fast, { publisherCpuUsPerMessage }] = [await sub.line(), await sub.line(), await pub.line()];
    const results = { fixed: { rate: o.rate, seconds: o.seconds, publisherCpuUsPerMessage, ...fixed }, fast: { sent: o.burst, ...fast } };
    console.log(JSON.stringify({ idleSubscriberRssMiB: +((rss as number) / 2 ** 20).toFixed(1), ...results }, null, 2));
    sub.process.kill();
  } finally {
    server.kill();
  }
}

await main();
