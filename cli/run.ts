import { Command } from 'commander';
import type { OptionsOf } from '../server/options.js';
import { addOptions } from './options.js';

/** reports/2024-05-01T12-00-00 (local time, no characters a shell or a file system minds). */
const timestamp = () => new Date(Date.now() - new Date().getTimezoneOffset() * 60_000).toISOString().slice(0, 19).replace(/:/g, '-');

export function runCommand(): Command {
  return addOptions(new Command('run'), 'run')
    .description('the C1M test on this box: load the friends graph, start the cluster, ramp the flood, hold, send messages, stop, write a report folder')
    .action(async (opts: OptionsOf<'run'>, command: Command) => {
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
