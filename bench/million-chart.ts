/**
 * Delivered chunks/s against delivery p99 for the message steps of several
 * `c1m run` reports (their summary.json), one line per run, with the 100 ms
 * the run calls sustained: the chart of a before/after sitting. A file instead
 * of a folder is `npm run bench:floor`'s output (bench/floor.ts), whose rate
 * steps are drawn the same way, so that the floor of the sitting is on the chart.
 *
 *   node dist/bench/million-chart.js --out docs/benchmarks/million.svg before=/tmp/run-a after=/tmp/run-b floor=/tmp/floor.log
 */
import { Command, Option } from 'commander';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderSvg } from '../loadgen/report.js';
import { P99_TARGET_MS, type RunResult } from '../loadgen/run-result.js';

const program = new Command('million-chart')
  .argument('<runs...>', "LABEL=DIR: a c1m run folder (with summary.json) and its name on the chart; LABEL=FILE: bench:floor's output")
  .addOption(new Option('--out <file>', 'where to write the SVG').makeOptionMandatory())
  .parse();
const { out } = program.opts<{ out: string }>();

/** The floor's steps (bench/floor.ts prints its progress, then its summary as one JSON object). */
interface FloorSummary {
  steps: Array<{ rate: number; receivedPerSecond: number; deliveryMs: { p99: number } }>;
}

const points = program.args.flatMap((arg) => {
  const at = arg.indexOf('=');
  if (at < 1) throw new Error(`'${arg}': give each run as LABEL=DIR (c1m run) or LABEL=FILE (bench:floor's output)`);
  const run = arg.slice(0, at);
  const path = arg.slice(at + 1);
  if (statSync(path).isFile()) {
    const text = readFileSync(path, 'utf8');
    let floor: FloorSummary;
    try {
      floor = JSON.parse(text.slice(text.indexOf('\n{') + 1)) as FloorSummary;
    } catch (err) {
      throw new Error(`${path}: not bench:floor's output (its summary, one JSON object after its progress lines): ${(err as Error).message}`);
    }
    return floor.steps.filter((step) => step.receivedPerSecond > 0).map((step) => ({ run, chunks: step.receivedPerSecond, p99: step.deliveryMs.p99, sends: 0 }));
  }
  const summary = JSON.parse(readFileSync(join(path, 'summary.json'), 'utf8')) as Pick<RunResult, 'steps'>;
  return summary.steps.map((step) => ({ run, chunks: step.deliveredChunksPerSecond, p99: step.delivery.p99, sends: step.msggen.achievedRate }));
});

const svg = await renderSvg({
  title: 'The million: delivered chunks/s against delivery p99, per message step',
  width: 640,
  height: 320,
  layer: [
    {
      data: { values: points },
      mark: { type: 'line', point: { size: 40 } },
      encoding: {
        x: { field: 'chunks', type: 'quantitative', title: 'chunks received/s (clients)' },
        y: { field: 'p99', type: 'quantitative', title: 'delivery p99, ms (log)', scale: { type: 'log' } },
        color: { field: 'run', type: 'nominal', title: null, legend: { orient: 'bottom', columns: 3, labelLimit: 320 } },
        tooltip: [{ field: 'sends', title: 'sends/s' }],
      },
    },
    { data: { values: [{ p99: P99_TARGET_MS }] }, mark: { type: 'rule', strokeDash: [4, 4], color: '#888' }, encoding: { y: { field: 'p99', type: 'quantitative' } } },
  ],
});
writeFileSync(out, svg);
console.log(`${out}: ${points.length} steps of ${program.args.length} runs`);
