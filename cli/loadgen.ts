import { Command, InvalidArgumentError, Option } from 'commander';
import { MultiBar } from 'cli-progress';
import { readFileSync } from 'node:fs';
import { DEFAULTS } from '../server/defaults.js';
import { integer, parseIdRange } from '../server/options.js';
import { tableOption } from './options.js';
import { parseConfig, parseSources, rowsFromRanges, runFlood, type FloodTotals, type SourceRow } from '../loadgen/flood.js';
import type { MsggenReport } from '../loadgen/msggen.js';

/** A commander parser from a parse function that throws. */
const parsed =
  <T>(parse: (text: string) => T) =>
  (text: string): T => {
    try {
      return parse(text);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };

/** Runs a load tool to its end and prints its JSON summary; any failure stops the monitor and becomes a command error. */
async function printSummary(view: { stop(): void }, command: Command, run: () => Promise<object>): Promise<void> {
  try {
    const summary = await run();
    view.stop();
    console.log(JSON.stringify(summary));
  } catch (err) {
    view.stop();
    command.error(`error: ${(err as Error).message}`);
  }
}

/**
 * Monitor output on stderr, keeping stdout for the JSON summary: on a
 * terminal a live bar with a line logged above it every interval; otherwise
 * just the lines.
 */
function monitor(format: string, intervalSeconds: number) {
  const bars = process.stderr.isTTY ? new MultiBar({ format, stream: process.stderr, hideCursor: true, clearOnComplete: false }) : undefined;
  let bar: ReturnType<MultiBar['create']> | undefined;
  let nextLine = intervalSeconds;
  return {
    update(elapsedSeconds: number, value: number, total: number, fields: Record<string, string | number>, line: () => string) {
      if (bars) {
        bar ??= bars.create(total, 0, fields);
        bar.update(value, fields);
      }
      if (elapsedSeconds >= nextLine) {
        nextLine += intervalSeconds;
        if (bars) bars.log(`${line()}\n`);
        else process.stderr.write(`${line()}\n`);
      }
    },
    stop: () => bars?.stop(),
  };
}

const errorsText = (errors: Record<string, number>) =>
  Object.entries(errors)
    .map(([kind, n]) => `${kind}=${n}`)
    .join(' ') || 'none';

export function loadgenCommand(): Command {
  const loadgen = new Command('loadgen').description('load tools for the C1M test: hold many streams, send messages');
  addFlood(loadgen);
  addMsggen(loadgen);
  return loadgen;
}

/** `c1m loadgen flood`. */
function addFlood(loadgen: Command): void {
  loadgen
    .command('flood')
    .description('open and hold many streams (GET /test/<id>, /sse/<id> or /ws/<id>), each from its own source address and local port; print a JSON summary')
    .addOption(new Option('--host <addr>', 'server address (IPv4)').default('127.0.0.1'))
    .addOption(new Option('--port <n>', 'server port').env('C1M_PORT').default(DEFAULTS.port).argParser(integer('port', 1)))
    .addOption(new Option('--src <addrs>', 'source addresses: A, A-B or a comma list (all of 127.0.0.0/8 is local)').default('127.0.1.1'))
    .addOption(new Option('--ids <range>', 'user ids N-M, split over the source addresses').argParser(parsed((t) => parseIdRange(t, 'ids'))))
    .addOption(new Option('--config <file>', "rows 'sourceIP firstId lastId' instead of --src and --ids").conflicts('ids'))
    .addOption(new Option('--ports <range>', 'local ports each source address binds, from the first up (skipping ports in use)').default([10000, 65535], '10000-65535').argParser(parsed((t) => parseIdRange(t, 'ports'))))
    .addOption(new Option('--rate <n>', 'connects per second (0: as fast as --concurrency allows)').default(10000).argParser(integer('rate', 0)))
    .addOption(new Option('--concurrency <n>', 'connects waiting for their welcome at most').default(2000).argParser(integer('concurrency', 1)))
    .addOption(new Option('--duration <s>', 'seconds to hold the streams once all are open').default(60).argParser(integer('duration', 0)))
    .addOption(new Option('--max-seconds <s>', 'hard stop (default: 3 x the planned ramp + duration + 60)').argParser(integer('max seconds', 1)))
    .addOption(new Option('--interval <s>', 'seconds between monitor lines').default(10).argParser(integer('interval', 1)))
    .addOption(new Option('--per-worker <n>', 'connections per worker process at most (default and ceiling: the open-file limit)').argParser(integer('per worker', 1)))
    .addOption(tableOption('loadgen flood', 'transport'))
    .addOption(tableOption('loadgen flood', 'topics'))
    .option('--reconnect', 'open a stream again when it ends, after a full-jitter backoff (0.5 s doubling to 20 s, like the browser client)')
    .addOption(new Option('--read-every <ms>', 'once all are open, read every MS instead of waking per chunk (cheaper on a box shared with the server; deliveries are still timed at arrival)').default(0).argParser(integer('read every', 0)))
    .action(async (opts, command: Command) => {
      if (!opts.config && !opts.ids) command.error('error: give --ids N-M (with --src) or --config FILE');
      let rows: SourceRow[];
      try {
        rows = opts.config ? parseConfig(readFileSync(opts.config, 'utf8'), opts.config) : rowsFromRanges(parseSources(opts.src), opts.ids);
      } catch (err) {
        command.error(`error: ${(err as Error).message}`);
      }
      const target = rows.reduce((n, r) => n + r.lastId - r.firstId + 1, 0);
      const rampSeconds = target / (opts.rate || 5000);
      const view = monitor('flood [{bar}] {value}/{total} open | {rate}/s | closed {closed} | failed {failed} | errors {errors}', opts.interval);
      let last = { welcomed: 0, at: 0 };
      const onReport = (t: FloodTotals) => {
        const rate = t.elapsedSeconds > last.at ? Math.round((t.welcomed - last.welcomed) / (t.elapsedSeconds - last.at)) : 0;
        if (t.elapsedSeconds > last.at) last = { welcomed: t.welcomed, at: t.elapsedSeconds };
        const line = () =>
          `flood ${t.elapsedSeconds}s open=${t.open}/${t.target} welcomed=${t.welcomed} reconnects=${t.reconnects} closed=${t.closed} failed=${t.failed} chunks=${t.chunks} bytes=${t.bytes} errors: ${errorsText(t.errors)}`;
        view.update(t.elapsedSeconds, t.open, t.target, { rate, closed: t.closed, failed: t.failed, errors: errorsText(t.errors) }, line);
      };
      await printSummary(view, command, () =>
        runFlood({
          host: opts.host,
          port: opts.port,
          rows,
          ports: opts.ports,
          rate: opts.rate,
          concurrency: opts.concurrency,
          duration: opts.duration,
          maxSeconds: opts.maxSeconds ?? Math.ceil(3 * rampSeconds + opts.duration + 60),
          perWorker: opts.perWorker,
          readEveryMs: opts.readEvery,
          transport: opts.transport,
          reconnect: opts.reconnect ?? false,
          topics: opts.topics,
          onReport,
        }),
      );
    });
}

/** `c1m loadgen msggen`. */
function addMsggen(loadgen: Command): void {
  loadgen
    .command('msggen')
    .description('send messages to random users through the backend API (POST /send/<id>); print a JSON summary')
    .addOption(new Option('--api-host <addr>', 'backend API address').env('C1M_API_HOST').default('127.0.0.1'))
    .addOption(new Option('--api-port <n>', 'backend API port').env('C1M_API_PORT').default(DEFAULTS.apiPort).argParser(integer('api port', 1)))
    .addOption(new Option('--token <secret>', 'send "Authorization: Bearer <secret>"').env('C1M_TOKEN'))
    .addOption(new Option('--users <n>', 'senders are drawn from 1..n').default(1_000_000).argParser(integer('users', 1)))
    .addOption(new Option('--generators <n>', 'independent generators').default(1000).argParser(integer('generators', 1)))
    .addOption(new Option('--send-interval <ms>', 'each generator waits a random MIN-MAX ms between sends').default([10, 110], '10-110').argParser(parsed((t) => parseIdRange(t, 'send interval'))))
    .addOption(new Option('--rate <n>', 'a fixed overall rate in sends/s instead of the generators').argParser(integer('rate', 1)))
    .addOption(new Option('--duration <s>', 'seconds of sending').default(60).argParser(integer('duration', 1)))
    .addOption(new Option('--connections <n>', 'keep-alive connections to the API').default(16).argParser(integer('connections', 1)))
    .addOption(new Option('--size <bytes>', 'pad each message to at least this size').default(0).argParser(integer('size', 0)))
    .addOption(tableOption('loadgen msggen', 'topics'))
    .addOption(tableOption('loadgen msggen', 'topicShare'))
    .addOption(new Option('--interval <s>', 'seconds between monitor lines').default(10).argParser(integer('interval', 1)))
    .action(async (opts, command: Command) => {
      const view = monitor('msggen [{bar}] {value}/{total} s | {rate} sends/s | delivered {delivered} | errors {errors}', opts.interval);
      const onReport = (r: MsggenReport) => {
        const rate = r.elapsedSeconds > 0 ? Math.round(r.answered / r.elapsedSeconds) : 0;
        const line = () => `msggen ${r.elapsedSeconds}s sent=${r.sent} answered=${r.answered} rate=${rate}/s delivered=${r.delivered} skipped=${r.skipped} errors: ${errorsText(r.errors)}`;
        view.update(r.elapsedSeconds, Math.min(Math.round(r.elapsedSeconds), opts.duration), opts.duration, { rate, delivered: r.delivered, errors: errorsText(r.errors) }, line);
      };
      // Loaded here, not into every process of this CLI (edges included).
      const { runMsggen } = await import('../loadgen/msggen.js');
      await printSummary(view, command, () =>
        runMsggen({
          apiHost: opts.apiHost,
          apiPort: opts.apiPort,
          token: opts.token,
          users: opts.users,
          generators: opts.generators,
          interval: opts.sendInterval,
          rate: opts.rate,
          duration: opts.duration,
          connections: opts.connections,
          size: opts.size,
          topics: opts.topics,
          topicShare: opts.topicShare,
          onReport,
        }),
      );
    });
}
