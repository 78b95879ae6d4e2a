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
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { deliverChunks, packChunks } from '../cluster/deliver-batch.js';
import { SUBJECTS, type BusMessage } from '../cluster/messages.js';
import { credsFile, makeTlsFiles, writeNatsConfig } from '../cluster/nats-auth.js';
import { NatsBus, type NatsBusOptions } from '../cluster/nats-bus.js';
import { freePort, stopChild } from '../cluster/supervisor.js';
import { cpuOf, spawnNatsServer } from '../loadgen/server-process.js';
import { epochMs } from '../router/latency.js';

const EDGE = 'bench';
const SUBJECT = SUBJECTS.edge(EDGE);
const DONE = SUBJECTS.sync;
const MODES = ['plain', 'auth', 'tls'] as const;
type Mode = (typeof MODES)[number];

/** Options of a child: its bus settings, passed on its command line (file names only). */
interface ChildBus {
  creds?: string;
  ca?: string;
}
const CHUNK = new Uint8Array(240).fill(120);

/** A deliver batch as a router sends it to an edge: one chunk, a few targets, when it was sent. */
const deliver = (): BusMessage => ({ t: 'deliver', ...packChunks([CHUNK], [[1, 2, 3, 4, 5, 6, 7, 8]], [epochMs()], []) });

async function subscriber(nats: string, settings: ChildBus): Promise<void> {
  const bus = await NatsBus.connect(nats, { name: 'bench-sub', ...settings });
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
    deliverChunks(message.chunks, message.topics, undefined, { deliver() {}, deliverTopic() {}, sent: (_chunk, at) => latencies.push(epochMs() - at) });
  });
  // At the end of each phase: the phase's figures on stdout for the parent, then an answer on the edge's own subject
  // (as an edge answers a sync; a router's credentials hear no replies), so the publisher goes on.
  let phases = 0;
  bus.subscribe(DONE, (message) => {
    if (message.t !== 'sync') return;
    const used = process.cpuUsage(cpu);
    const seconds = (last - started) / 1000;
    latencies.sort((a, b) => a - b);
    const at = (q: number) => +(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0).toFixed(3);
    console.log(JSON.stringify({ rssMiB: +(process.memoryUsage().rss / 2 ** 20).toFixed(1), received: count, cpuUsPerMessage: +((used.user + used.system) / count).toFixed(2), perSecond: Math.round(count / seconds), latencyMs: { p50: at(0.5), p99: at(0.99), max: at(1) } }));
    bus.publish(SUBJECTS.presence(EDGE), { t: 'presence', boot: 'bench', seq: ++phases, in: [], out: [] });
    count = 0;
  });
  // Tells the parent the subscriptions are in place, and this process's idle RSS.
  setTimeout(() => console.log(JSON.stringify({ ready: true, rss: process.memoryUsage().rss })), 2000);
}

async function publisher(nats: string, settings: ChildBus, rate: number, seconds: number, burst: number): Promise<void> {
  const bus = await NatsBus.connect(nats, { name: 'bench-pub', ...settings });
  let phaseEnded: (() => void) | undefined;
  bus.subscribe(SUBJECTS.presence(EDGE), () => phaseEnded?.());
  const endPhase = async () => {
    await sleep(500); // the last messages reach the subscriber before the question does
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the subscriber did not answer within 10 s')), 10_000);
      phaseEnded = () => (clearTimeout(timer), resolve());
      bus.publish(DONE, { t: 'sync' });
    });
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

/** What the subscriber reports at the end of a phase. */
interface Phase {
  received: number;
  cpuUsPerMessage: number;
  perSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
}

/** One run of a mode: its own nats-server (with users and TLS as the mode says), subscriber and publisher. */
async function run(mode: Mode, o: { rate: number; seconds: number; burst: number }) {
  const port = await freePort('127.0.0.1');
  const dir = mkdtempSync(join(tmpdir(), 'c1m-bench-bus-'));
  const tls = mode === 'tls' ? makeTlsFiles(dir, ['127.0.0.1']) : undefined;
  const config = mode === 'plain' ? [] : ['-c', writeNatsConfig(dir, { listen: `127.0.0.1:${port}`, edges: [EDGE], tls })];
  const server = await spawnNatsServer('127.0.0.1', port, config);
  const bus = (role: 'edge' | 'router') => (mode === 'plain' ? [] : ['--creds', credsFile(dir, role, EDGE), ...(tls ? ['--ca', tls.ca] : [])]);
  try {
    const url = `${tls ? 'tls' : 'nats'}://127.0.0.1:${port}`;
    const natsCpu = cpuOf(server.pid!);
    const sub = child(['sub', url, ...bus('edge')]);
    const { rss } = await sub.line();
    const pub = child(['pub', url, ...bus('router'), '--rate', String(o.rate), '--seconds', String(o.seconds), '--burst', String(o.burst)]);
    const [fixed, fast] = [(await sub.line()) as unknown as Phase, (await sub.line()) as unknown as Phase];
    const publisherCpuUsPerMessage = (await pub.line()).publisherCpuUsPerMessage as number;
    // nats-server's share, over both phases: with TLS it decrypts and encrypts every message too.
    const natsCpuUsPerMessage = +(((cpuOf(server.pid!) - natsCpu) * 1e6) / (o.rate * o.seconds + o.burst)).toFixed(2);
    await stopChild(sub.process);
    return { mode, natsCpuUsPerMessage, idleSubscriberRssMiB: +((rss as number) / 2 ** 20).toFixed(1), fixed: { rate: o.rate, seconds: o.seconds, publisherCpuUsPerMessage, ...fixed }, fast: { sent: o.burst, ...fast } };
  } finally {
    await stopChild(server);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const opts = new Command('bench-bus')
    .argument('[role]', 'internal: sub or pub')
    .argument('[nats]')
    .addOption(new Option('--rate <n>', 'messages per second in the fixed-rate phase').default(2000).argParser(Number))
    .addOption(new Option('--seconds <n>', 'length of the fixed-rate phase').default(10).argParser(Number))
    .addOption(new Option('--burst <n>', 'messages sent as fast as possible').default(100_000).argParser(Number))
    .addOption(new Option('--modes <list>', 'plain (no users), auth (NKey users with subject permissions), tls (auth over TLS), comma-separated').default(['plain']).argParser((t: string) => t.split(',')))
    .addOption(new Option('--rounds <n>', 'runs of each mode, in turn').default(1).argParser(Number))
    .addOption(new Option('--creds <file>', 'internal: a child\'s credentials'))
    .addOption(new Option('--ca <file>', 'internal: a child\'s CA file'))
    .parse();
  const [role, nats] = opts.args;
  const o = opts.opts<{ rate: number; seconds: number; burst: number; modes: string[]; rounds: number; creds?: string; ca?: string }>();
  const settings: Pick<NatsBusOptions, 'creds' | 'ca'> = { creds: o.creds, ca: o.ca };
  if (role === 'sub') return subscriber(nats, settings);
  if (role === 'pub') return publisher(nats, settings, o.rate, o.seconds, o.burst);
  const unknown = o.modes.filter((m) => !MODES.includes(m as Mode));
  if (unknown.length) throw new Error(`unknown mode ${unknown.join(', ')} (${MODES.join(', ')})`);

  const results: Awaited<ReturnType<typeof run>>[] = [];
  for (let round = 0; round < o.rounds; round++)
    for (const mode of o.modes as Mode[]) {
      results.push(await run(mode, o));
      console.log(JSON.stringify({ round, ...results.at(-1) }));
    }
  // Per mode, the range of each figure over its rounds.
  const range = (values: number[]) => (Math.min(...values) === Math.max(...values) ? `${values[0]}` : `${Math.min(...values)}-${Math.max(...values)}`);
  const summary = (o.modes as Mode[]).map((mode) => {
    const runs = results.filter((r) => r.mode === mode);
    const pick = (f: (r: (typeof runs)[number]) => unknown) => range(runs.map((r) => f(r) as number));
    return {
      mode,
      'sub us/msg at rate': pick((r) => r.fixed.cpuUsPerMessage),
      'pub us/msg at rate': pick((r) => r.fixed.publisherCpuUsPerMessage),
      'p99 ms at rate': pick((r) => r.fixed.latencyMs.p99),
      'sub us/msg flat out': pick((r) => r.fast.cpuUsPerMessage),
      'nats-server us/msg': pick((r) => r.natsCpuUsPerMessage),
      'msgs/s flat out': pick((r) => r.fast.perSecond),
      'idle RSS MiB': pick((r) => r.idleSubscriberRssMiB),
    };
  });
  console.table(summary);
}

await main();
