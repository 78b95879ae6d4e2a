/**
 * What a topic costs a listening stream, on the JS heap, measured in one
 * process after forced collections (RSS per idle stream, `npm run bench --
 * --idle-only --topics k`, moves by more than a topic costs between runs): a
 * registry holding `--streams` streams that each listen to k of `--of` topics,
 * their lists made as the public listener makes them (parseTopics, then
 * Registry.intern), for k = 0, 1 and 5, alternated `--runs` times; with
 * `--as-parsed`, each stream keeps its own list as parseTopics made it (as
 * before Registry.intern).
 *
 *   node --expose-gc dist/bench/topic-memory.js [--streams 100000] [--of 1000] [--runs 3] [--as-parsed]
 */
import { Command, Option } from 'commander';
import { Registry, type Connection } from '../router/registry.js';
import { parseTopics } from '../server/topics.js';

const opts = new Command('topic-memory')
  .addOption(new Option('--streams <n>', 'streams in the registry').default(100_000).argParser(Number))
  .addOption(new Option('--of <n>', 'topics the streams share').default(1000).argParser(Number))
  .addOption(new Option('--runs <n>', 'rounds of k = 0, 1, 5').default(3).argParser(Number))
  .option('--as-parsed', "each stream keeps its own list, as parsed, not the registry's")
  .parse()
  .opts<{ streams: number; of: number; runs: number; asParsed?: boolean }>();

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

/** A stream as the registry sees it; the same object whatever its topics, so that the difference is theirs. */
class Stream implements Connection {
  constructor(
    readonly user: number,
    readonly topics: readonly string[],
  ) {}
  write(): number {
    return 1;
  }
  close(): void {}
}

/** Heap bytes per stream of a registry of streams listening to `k` topics each. */
function bytesPerStream(k: number): number {
  const registry = new Registry();
  const streams: Stream[] = [];
  gc!();
  gc!();
  const before = process.memoryUsage().heapUsed;
  for (let id = 1; id <= opts.streams; id++) {
    const query = Array.from({ length: k }, (_, j) => `room:${(id + j) % opts.of}`).join(',');
    const topics = parseTopics(query) as string[];
    const stream = new Stream(id, opts.asParsed ? topics : registry.intern(topics));
    streams.push(stream);
    registry.login(stream);
  }
  gc!();
  gc!();
  const bytes = (process.memoryUsage().heapUsed - before) / opts.streams;
  if (registry.connections !== streams.length) throw new Error('a stream was refused');
  return bytes;
}

const rows: Record<number, number[]> = { 0: [], 1: [], 5: [] };
for (let run = 0; run < opts.runs; run++) for (const k of [0, 1, 5]) rows[k].push(+bytesPerStream(k).toFixed(1));
const base = rows[0];
console.log(`${opts.streams} streams, topics shared among ${opts.of}, lists ${opts.asParsed ? 'as parsed' : 'interned'}; heap bytes per stream, ${opts.runs} runs:`);
for (const k of [0, 1, 5]) {
  const perTopic = k === 0 ? '' : `; per topic ${rows[k].map((b, i) => ((b - base[i]) / k).toFixed(1)).join(', ')}`;
  console.log(`  ${k} topics: ${rows[k].join(', ')}${perTopic}`);
}
