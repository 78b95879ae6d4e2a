import { Command, Option } from 'commander';
import { DEFAULTS } from '../server/defaults.js';
import { historyOptions, integer, partitionsOption, replicasOption, topicShareOption, topicsOption, transportOption } from './options.js';
import { parseIdRange } from '../loadgen/flood.js';

/** "1000,2000,4000" → sends/s per step. */
const rateList = (text: string): number[] => text.split(',').map((part) => integer('msg rate', 1)(part.trim()));

/** reports/2024-05-01T12-00-00 (local time, no characters a shell or a file system minds). */
const timestamp = () => new Date(Date.now() - new Date().getTimezoneOffset() * 60_000).toISOString().slice(0, 19).replace(/:/g, '-');

export function runCommand(): Command {
  return historyOptions(new Command('run'))
    .description('the C1M test on this box: load the friends graph, start the cluster, ramp the flood, hold, send messages, stop, write a report folder')
    .addOption(new Option('--connections <n>', 'streams to open and hold').default(1_000_000).argParser(integer('connections', 1)))
    .addOption(new Option('--users <n>', 'friends graph: users').default(1_000_000).argParser(integer('users', 2)))
    .addOption(new Option('--m <m>', 'friends graph: edges each new user brings (Barabási–Albert)').default(15).argParser(integer('m', 1)))
    .addOption(new Option('--seed <s>', 'friends graph: random seed').default(1).argParser(integer('seed', 0)))
    .addOption(new Option('--db <path>', 'subscription store; loaded with the graph unless it holds it (default: ./data/friends-<users>x<m>.db)'))
    .addOption(new Option('--edges <n>', 'edge processes (default: enough for --connections at the open-file limit)').argParser(integer('edges', 1)))
    .addOption(new Option('--batch-ms <ms>', "the router's batch window (c1m cluster --batch-ms)").argParser(integer('batch ms', 0)))
    .addOption(new Option('--routers <n>', 'router processes (c1m cluster --routers; with a history, one leads each partition and the others stand by)').default(1).argParser(integer('routers', 1)))
    .addOption(partitionsOption())
    .addOption(replicasOption())
    .addOption(new Option('--src <addrs>', 'flood source addresses: A-B or a comma list (each gives --ports local ports)').default('127.0.1.1-127.0.1.40'))
    .addOption(new Option('--ports <range>', 'local ports each source address binds').default([10000, 65535], '10000-65535').argParser((t) => parseIdRange(t, 'ports')))
    .addOption(new Option('--rate <n>', 'connects per second during the ramp').default(10000).argParser(integer('rate', 1)))
    .addOption(new Option('--concurrency <n>', 'connects waiting for their welcome at most').default(2000).argParser(integer('concurrency', 1)))
    .addOption(new Option('--hold <s>', 'seconds to hold every stream before the messages').default(60).argParser(integer('hold', 0)))
    .addOption(new Option('--msg-seconds <s>', 'seconds of messages (per rate with --msg-rates)').default(60).argParser(integer('msg seconds', 1)))
    .addOption(new Option('--warmup <s>', 'seconds of messages at the first rate before the measured ones, not reported as a step (V8 compiles the delivery path in every edge meanwhile)').default(10).argParser(integer('warmup', 0)))
    .addOption(new Option('--msg-rate <n>', 'one fixed send rate instead of the generators').argParser(integer('msg rate', 1)).conflicts('msgRates'))
    .addOption(new Option('--msg-rates <list>', 'steps of fixed send rates, e.g. 1000,2000,4000: reports the highest sustained at p99 <= 100 ms').argParser(rateList))
    .addOption(new Option('--generators <n>', "the original's generators (when no rate is given)").default(1000).argParser(integer('generators', 1)))
    .addOption(new Option('--send-interval <ms>', 'each generator waits a random MIN-MAX ms between sends').default([10, 110], '10-110').argParser((t) => parseIdRange(t, 'send interval')))
    .addOption(new Option('--msg-connections <n>', 'keep-alive connections from msggen to the API (each carries one request at a time: on a saturated box, 16 held 2,000 sends/s back)').default(128).argParser(integer('msg connections', 1)))
    .addOption(transportOption())
    .addOption(topicsOption())
    .addOption(topicShareOption())
    .addOption(new Option('--heartbeat <seconds>', "the streams' heartbeat (c1m cluster --heartbeat; 0: none)").default(DEFAULTS.heartbeatSeconds).argParser(integer('heartbeat', 0)))
    .addOption(new Option('--read-every <ms>', 'flood workers read every MS once all streams are open, instead of being woken by each chunk (0: woken); deliveries are timed at arrival either way').default(50).argParser(integer('read every', 0)))
    .addOption(new Option('--out <dir>', 'report folder (default: reports/<timestamp>)'))
    .addOption(new Option('--max-seconds <s>', 'hard stop, counted from the cluster start (default: 3 x the planned ramp + hold + messages + 180)').argParser(integer('max seconds', 1)))
    .action(async (opts, command: Command) => {
      // Loaded here: the same CLI starts light edge processes.
      const { runC1m } = await import('../loadgen/run.js');
      const stop = new AbortController();
      const onSignal = (signal: string) => {
        if (stop.signal.aborted) return process.stderr.write(`${signal}: already stopping (every process this run started, then the report)\n`);
        process.stderr.write(`${signal}: stopping\n`);
        stop.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const result = await runC1m({
          ...opts,
          db: opts.db ?? `./data/friends-${opts.users}x${opts.m}.db`,
          readEveryMs: opts.readEvery,
          out: opts.out ?? `reports/${timestamp()}`,
          signal: stop.signal,
        });
        console.log(JSON.stringify({ status: result.status, error: result.error, report: `${result.dir}/report.md` }));
        process.exit(result.status === 'complete' ? 0 : 1);
      } catch (err) {
        command.error(`error: ${(err as Error).message}`);
      }
    });
}
