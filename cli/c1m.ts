#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { createRequire } from 'node:module';
import { pino } from 'pino';
import { toPairs, type Pair } from '../subsmanager/pairs.js';
import { parseSubject } from '../subsmanager/subjects.js';
import type { SubscriptionStore } from '../subsmanager/store.js';
import { clusterCommands } from './cluster.js';
import { friendsCommand } from './friends.js';
import { haproxyConfigCommand } from './haproxy.js';
import { loadgenCommand } from './loadgen.js';
import { apiOptions, dbOption, historyOptions, integer, logLevelOption, maxUserIdOption, streamOptions } from './options.js';
import { runCommand } from './run.js';

/** "subscriber:subject" → pair: `2:1` (2 hears user 1), `2:photo:789` (2 hears the topic). Checked as the API checks pairs (toPairs). */
const pair = (text: string, previous: Pair[] = []): Pair[] => {
  const colon = text.indexOf(':');
  try {
    if (colon < 0) throw new Error('no subject');
    return [...previous, ...toPairs([[parseSubject(text.slice(0, colon)), parseSubject(text.slice(colon + 1))]])];
  } catch (err) {
    throw new InvalidArgumentError(`'${text}' is not subscriber:subject (e.g. 2:1 means 2 receives what user 1 is sent, 2:photo:789 what photo:789 is sent): ${(err as Error).message}`);
  }
};

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };
const program = new Command('c1m').description('A comet push server for a social graph').version(version).showHelpAfterError();

historyOptions(apiOptions(streamOptions(program.command('server'))))
  .description('run the comet server (public streams + backend API) on the embedded SQLite store')
  .addOption(new Option('--mmap-mib <n>', 'SQLite memory-mapped window over the store, MiB (0: off)').default(0).argParser(integer('mmap', 0)))
  .addOption(logLevelOption())
  .addOption(new Option('--stats-interval <seconds>', 'log the stats every so often (0: never)').default(60).argParser(integer('stats interval', 0)))
  .option('--warm-cache', 'read the subscriptions table into the page cache at start (size --cache-mib to hold it)')
  .option('--demo', 'if the store is empty, add a small demo friends graph and print what to try')
  .action(async (opts) => {
    // Logs go to process.stdout, deaf to write errors: if whatever reads them goes away
    // (EPIPE), pino's own destination retries the write forever and the server freezes
    // (tested); this way the lines are dropped and the server keeps serving.
    process.stdout.on('error', () => {});
    const logger = pino({ level: opts.logLevel }, process.stdout);
    // Loaded here, not at the top: the same CLI starts light edge processes that never touch SQLite.
    const [{ start }, { seedDemoGraph }] = await Promise.all([import('../server/server.js'), import('../subsmanager/demo.js')]);
    // commander camel-cases --cache-mib as cacheMib; the library spells MiB.
    const c1m = await start({ ...opts, cacheMiB: opts.cacheMib, mmapMiB: opts.mmapMib, heartbeatSeconds: opts.heartbeat, logger });
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

program
  .command('token')
  .description('mint a stream token for /test/<id>?token=… (the server runs with the same --stream-secret)')
  .argument('<id>', 'user id', integer('user', 1))
  .addOption(new Option('--stream-secret <secret>', 'the secret the server was given').env('C1M_STREAM_SECRET').makeOptionMandatory())
  .addOption(new Option('--ttl <seconds>', 'lifetime of the token').default(3600).argParser(integer('ttl', 1)))
  .option('--topics <list>', 'topics the stream may also listen to, comma-separated: kind:id, or kind:* for any of a kind')
  .action(async (id: number, opts, command: Command) => {
    const { checkStreamSecret, mintStreamToken } = await import('../server/auth.js');
    checkStreamSecret(opts.streamSecret);
    try {
      console.log(mintStreamToken(opts.streamSecret, id, opts.ttl, Date.now(), opts.topics ? opts.topics.split(',') : []));
    } catch (err) {
      command.error(`error: ${(err as Error).message}`);
    }
  });

const subs = program.command('subs').description('read and change subscriptions in the store directly (safe while a server runs)');
subs
  .command('add')
  .description('add subscriptions, each as subscriber:subject (a user id or a topic, kind:id)')
  .argument('<pairs...>', 'subscriber:subject', (text: string, previous: Pair[]) => pair(text, previous))
  .option('--mutual', 'also add the reverse of each pair (friends)')
  .addOption(dbOption())
  .addOption(maxUserIdOption())
  .action((pairs: Pair[], opts, command: Command) => {
    const topic = pairs.find(([, subject]) => typeof subject !== 'number');
    if (opts.mutual && topic) command.error(`error: --mutual is for users (friends), and ${topic[1]} is a topic`);
    const all = opts.mutual ? pairs.flatMap(([a, b]): Pair[] => [[a, b], [b as number, a]]) : pairs;
    // Held to the servers' --max-user-id, as POST /subscriptions is: a pair above it could never be sent to.
    try {
      toPairs(all, opts.maxUserId);
    } catch (err) {
      command.error(`error: ${(err as Error).message}`);
    }
    return withStore(opts.db, (store) => console.log(JSON.stringify({ added: store.addSubscriptions(all) })));
  });
subs
  .command('remove')
  .description('remove subscriptions, each as subscriber:subject')
  .argument('<pairs...>', 'subscriber:subject', (text: string, previous: Pair[]) => pair(text, previous))
  .addOption(dbOption())
  .action((pairs: Pair[], opts) => {
    return withStore(opts.db, (store) => console.log(JSON.stringify({ removed: store.removeSubscriptions(pairs) })));
  });
subs
  .command('get')
  .description("print a user's subscribers (who hears them) and subscriptions (whom they hear)")
  .argument('<user>', 'user id', integer('user', 1))
  .addOption(dbOption())
  .action((user: number, opts) => {
    return withStore(opts.db, (store) =>
      console.log(JSON.stringify({ user, subscribers: store.getSubscribers(user), subscriptions: store.getSubscriptions(user) })),
    );
  });

program.addCommand(friendsCommand());
program.addCommand(loadgenCommand());
program.addCommand(runCommand());
for (const command of clusterCommands()) program.addCommand(command);
program.addCommand(haproxyConfigCommand());

async function withStore(path: string, use: (store: SubscriptionStore) => void): Promise<void> {
  const { openStore } = await import('../subsmanager/store.js');
  const store = openStore(path);
  try {
    use(store);
  } finally {
    store.close();
  }
}

program.parseAsync().catch((err: Error) => {
  console.error(`c1m: ${err.message}`);
  process.exit(1);
});
