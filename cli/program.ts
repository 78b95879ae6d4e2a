import { Command, InvalidArgumentError, Option } from 'commander';
import { integer } from '../server/options.js';
import { toPairs, type Pair } from '../subsmanager/pairs.js';
import { parseSubject } from '../subsmanager/subjects.js';
import type { SubscriptionStore } from '../subsmanager/store.js';
import { clusterCommands } from './cluster.js';
import { friendsCommand } from './friends.js';
import { haproxyConfigCommand } from './haproxy.js';
import { loadgenCommand } from './loadgen.js';
import { tableOption } from './options.js';
import { runCommand } from './run.js';
import { serverCommand } from './server.js';

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

/** Every command of c1m, each with its options (the table's, server/options.ts, and any of its own). */
export function c1mProgram(version: string): Command {
  const program = new Command('c1m').description('A comet push server for a social graph').version(version).showHelpAfterError();

  serverCommand(program.command('server'));

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
    .addOption(tableOption('subs add', 'db'))
    .addOption(tableOption('subs add', 'maxUserId'))
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
    .addOption(tableOption('subs remove', 'db'))
    .action((pairs: Pair[], opts) => {
      return withStore(opts.db, (store) => console.log(JSON.stringify({ removed: store.removeSubscriptions(pairs) })));
    });
  subs
    .command('get')
    .description("print a user's subscribers (who hears them) and subscriptions (whom they hear)")
    .argument('<user>', 'user id', integer('user', 1))
    .addOption(tableOption('subs get', 'db'))
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
  return program;
}

async function withStore(path: string, use: (store: SubscriptionStore) => void): Promise<void> {
  const { openStore } = await import('../subsmanager/store.js');
  const store = openStore(path);
  try {
    use(store);
  } finally {
    store.close();
  }
}
