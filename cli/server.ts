/** `c1m server`: the single process, on the embedded SQLite store. */
import type { Command } from 'commander';
import { pino } from 'pino';
import type { OptionsOf } from '../server/options.js';
import { addOptions } from './options.js';

/** Makes `command` (the program's `server`, made by the program so that it inherits its settings) `c1m server`. */
export function serverCommand(command: Command): Command {
  return addOptions(command, 'server')
    .description('run the comet server (public streams + backend API) on the embedded SQLite store')
    .action(async (opts: OptionsOf<'server'>) => {
      // Logs go to process.stdout, deaf to write errors: if whatever reads them goes away
      // (EPIPE), pino's own destination retries the write forever and the server freezes
      // (tested); this way the lines are dropped and the server keeps serving.
      process.stdout.on('error', () => {});
      const logger = pino({ level: opts.logLevel }, process.stdout);
      // Loaded here, not at the top: the same CLI starts light edge processes that never touch SQLite.
      const [{ start }, { seedDemoGraph }] = await Promise.all([import('../server/server.js'), import('../subsmanager/demo.js')]);
      const c1m = await start({ ...opts, logger });
      if (opts.demo && seedDemoGraph(c1m.store)) {
        const host = opts.host === '0.0.0.0' ? 'localhost' : opts.host;
        // Commands that work on this server: a secured stream needs a token (minted here, for an hour), the API its header.
        const { mintStreamToken } = await import('../server/auth.js');
        const token = opts.streamSecret === undefined ? undefined : mintStreamToken(opts.streamSecret, 1, 3600);
        const stream = token ? `'${host}:${c1m.port}/test/1?token=${token}'` : `${host}:${c1m.port}/test/1`;
        const page = `http://${host}:${c1m.port}/${token ? `?user=1&token=${token}` : ''}`;
        const auth = opts.token === undefined ? '' : ` -H "Authorization: Bearer $C1M_TOKEN"`;
        console.log(`
Demo friends graph added: 1-2, 1-3, 2-3, 2-4, 4-5, 5-6 (mutual).
Watch user 1's stream (1 is friends with 2):
  curl -N ${stream}        or open ${page}
Then, in another terminal, have user 2 say something:
  curl -X POST${auth} ${opts.apiHost}:${c1m.apiPort}/send/2 -d hi${auth && '        (C1M_TOKEN: the --token this server was given)'}
User 1 receives "hi" because 1 subscribes to 2.
`);
      }
      if (opts.statsInterval > 0) setInterval(() => logger.info(c1m.stats(), 'stats'), opts.statsInterval * 1000).unref();
      const stop = (signal: string) => {
        logger.info({ signal }, 'shutting down');
        c1m.close();
        process.exit(0);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
