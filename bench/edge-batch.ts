/**
 * The edge's work per deliver batch, counted in CPU instructions (which, unlike
 * wall-clock time, do not move with the load of a shared box): deliver batches
 * as a router publishes them, framed as nats-server sends them, through the
 * edge's real path (the NATS client's parser, the bus's decode and validation,
 * Deliveries, the registry) to streams that count what they are handed. The
 * streams' own write (framing, cork, send) is bench:hub's.
 *
 *   npm run bench:edge -- --callgrind            (instructions per delivered chunk, under valgrind)
 *   npm run bench:edge -- --batches 20000        (wall-clock only)
 *
 * --callgrind runs this script twice under `valgrind --tool=callgrind`, with
 * the same warm-up and two numbers of batches: the difference over the
 * difference in chunks is the instructions per chunk, start-up and warm-up
 * cancelled out.
 */
import { Command, Option } from 'commander';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { dispatch } from '../cluster/bus.js';
import { packChunks } from '../cluster/deliver-batch.js';
import { Deliveries } from '../cluster/deliveries.js';
import { encode, SUBJECTS, type BusMessage } from '../cluster/messages.js';
import { Parser } from '../cluster/nats.js';
import { epochMs, LatencyHistogram } from '../router/latency.js';
import { Registry, type Connection } from '../router/registry.js';
import { toChunk } from '../router/router.js';
import { StreamHub } from '../server/stream.js';

const opts = new Command('bench-edge-batch')
  .addOption(new Option('--users <n>', 'users with a stream on the edge').default(20000).argParser(Number))
  .addOption(new Option('--chunks <n>', 'chunks per batch').default(50).argParser(Number))
  .addOption(new Option('--targets <n>', 'users per chunk').default(1).argParser(Number))
  .addOption(new Option('--size <bytes>', "a message's bytes").default(40).argParser(Number))
  .addOption(new Option('--warmup <n>', 'batches before the measured ones').default(4000).argParser(Number))
  .addOption(new Option('--batches <n>', 'batches measured').default(4000).argParser(Number))
  .option('--callgrind', 'count instructions per chunk under valgrind (two runs)')
  .parse()
  .opts<{ users: number; chunks: number; targets: number; size: number; warmup: number; batches: number; callgrind?: boolean }>();

function countInstructions(): void {
  const self = fileURLToPath(import.meta.url);
  const base = ['--users', opts.users, '--chunks', opts.chunks, '--targets', opts.targets, '--size', opts.size, '--warmup', opts.warmup].map(String);
  const instructions = (batches: number): number => {
    // Single-threaded: V8's compiler and collector threads otherwise run as valgrind schedules them, and the counts drift.
    const r = spawnSync('valgrind', ['--tool=callgrind', '--callgrind-out-file=/dev/null', process.execPath, '--single-threaded', self, ...base, '--batches', String(batches)], { encoding: 'utf8' });
    const collected = /Collected : (\d+)/.exec(r.stderr);
    if (r.status !== 0 || !collected) throw new Error(`valgrind failed (${r.status}): ${r.stderr.slice(-2000)}`);
    return Number(collected[1]);
  };
  const few = opts.batches;
  const many = 2 * opts.batches;
  const a = instructions(few);
  const b = instructions(many);
  const chunks = (many - few) * opts.chunks;
  console.log(
    JSON.stringify({ users: opts.users, chunksPerBatch: opts.chunks, targetsPerChunk: opts.targets, size: opts.size, instructions: { [few]: a, [many]: b }, perChunk: Math.round((b - a) / chunks), perDelivery: Math.round((b - a) / chunks / opts.targets) }),
  );
}

/** A stream that counts what it is handed. */
class CountingStream implements Connection {
  writes = 0;
  constructor(readonly user: number) {}
  write(): number {
    this.writes++;
    return 1;
  }
  close(): void {}
}

function run(): void {
  const registry = new Registry();
  const streams: CountingStream[] = [];
  for (let user = 1; user <= opts.users; user++) {
    const stream = new CountingStream(user);
    streams.push(stream);
    registry.login(stream);
  }
  const hub = new StreamHub(registry, 1 << 20);
  hub.onWritten = new LatencyHistogram().observe;
  const deliveries = new Deliveries(registry, hub, pino({ level: 'silent' }));
  const onEdgeMessage = (message: BusMessage): void => {
    if (message.t === 'deliver') deliveries.batch(message);
  };
  const parser = new Parser({
    message: (_sid, subject, reply, data) => dispatch(subject, data, reply, onEdgeMessage, { malformed: (_s, err) => fail(err.message) }),
    info() {},
    ping() {},
    pong() {},
    error: fail,
  });

  // Two router runs' worth of numbered batches, alternated: each run's batches follow on, and a new run starts its own count.
  const PER_RUN = 64;
  const subject = SUBJECTS.edge('e1');
  let id = 1;
  let user = 0;
  const frames = ['a', 'b'].map((run) =>
    Array.from({ length: PER_RUN }, (_, b) => {
      const chunks: Uint8Array[] = [];
      const targets: number[][] = [];
      const sentAt: number[] = [];
      const ids: number[] = [];
      for (let i = 0; i < opts.chunks; i++) {
        chunks.push(toChunk(`t=${epochMs().toFixed(3)} msggen ${id}`.padEnd(opts.size, '.')));
        targets.push(Array.from({ length: opts.targets }, () => (user = (user * 7919 + 1) % opts.users) + 1));
        sentAt.push(epochMs());
        ids.push(id++);
      }
      const payload = encode({ t: 'deliver', ...packChunks(chunks, targets, sentAt, ids), run, batch: b + 1, term: 1 });
      return Buffer.concat([Buffer.from(`MSG ${subject} 1 ${payload.length}\r\n`), payload, Buffer.from('\r\n')]);
    }),
  );
  const all = frames.flat();

  // Each read copied out of the socket's buffer, as NatsClient's onread does.
  let pushed = 0;
  const push = (batches: number): void => {
    for (let i = 0; i < batches; i++) parser.push(Buffer.from(all[pushed++ % all.length]));
  };
  push(opts.warmup);
  const started = process.hrtime.bigint();
  push(opts.batches);
  const ns = Number(process.hrtime.bigint() - started);
  const delivered = streams.reduce((n, s) => n + s.writes, 0);
  const expected = (opts.warmup + opts.batches) * opts.chunks * opts.targets;
  if (delivered !== expected || registry.connections !== opts.users) fail(`delivered ${delivered} of ${expected} chunks, ${registry.connections} streams left of ${opts.users}`);
  if (!opts.callgrind) console.log(JSON.stringify({ batches: opts.batches, chunks: opts.batches * opts.chunks, nsPerChunk: Math.round(ns / (opts.batches * opts.chunks)) }));
}

if (opts.callgrind) countInstructions();
else run();

function fail(why: string): never {
  console.error(`bench-edge-batch: ${why}`);
  process.exit(1);
}
