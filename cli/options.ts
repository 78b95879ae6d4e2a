import { InvalidArgumentError, Option, type Command } from 'commander';
import { checkAllowOrigin } from '../server/cors.js';
import { DEFAULTS } from '../server/defaults.js';
import { DEFAULT_CACHE_MIB } from '../subsmanager/defaults.js';
import { MAX_PARTITIONS } from '../subsmanager/partitions.js';

/** A commander argument parser for a safe integer >= min. */
export const integer =
  (name: string, min: number) =>
  (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return value;
  };

/** --db, shared by every command that opens the store. */
export const dbOption = () => new Option('--db <path>', 'SQLite subscription store').env('C1M_DB').default(DEFAULTS.db);

export const logLevelOption = () =>
  new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'silent']).default('info');

export const maxUserIdOption = () => new Option('--max-user-id <n>', 'highest user id accepted').default(DEFAULTS.maxUserId).argParser(integer('max user id', 1));

export const maxBacklogOption = (help: string) => new Option('--max-backlog <bytes>', help).default(DEFAULTS.maxBacklog).argParser(integer('max backlog', 1));

/** A router's partitions of the subjects: `c1m router`, `c1m cluster` (which passes it on) and `c1m run`. */
export const partitionsOption = () =>
  new Option('--partitions <n>', `partitions of the subjects, each numbered by its own router (one history and lease each; the same for every router of a cluster; at most ${MAX_PARTITIONS})`)
    .default(1)
    .argParser((text: string) => {
      const n = integer('partitions', 1)(text);
      if (n > MAX_PARTITIONS) throw new InvalidArgumentError(`partitions must be at most ${MAX_PARTITIONS}`);
      return n;
    });

/** JetStream keeps a stream on at most 5 servers. */
const MAX_REPLICAS = 5;

/** The brain on JetStream: `c1m router`, `c1m cluster` (which starts that many nats-servers) and `c1m run`. */
export const replicasOption = () =>
  new Option('--replicas <n>', `keep the brain (histories, leases, subscription changes) on JetStream, each stream on this many nats-servers (at most ${MAX_REPLICAS}); c1m cluster then starts that many, clustered`).argParser((text: string) => {
    const n = integer('replicas', 1)(text);
    if (n > MAX_REPLICAS) throw new InvalidArgumentError(`replicas must be at most ${MAX_REPLICAS} (JetStream's limit)`);
    return n;
  });

/** Which streams a load tool opens: chunked /test/<id>, EventSource /sse/<id> or WebSocket /ws/<id>. */
export const transportOption = () => new Option('--transport <transport>', 'streams to open: chunked (/test/<id>), sse (/sse/<id>) or ws (/ws/<id>)').choices(['chunked', 'sse', 'ws']).default('chunked');

/** Topics the load tools' streams listen to: stream <id> to room:<1 + id % n> (floodTopic). */
export const topicsOption = () => new Option('--topics <n>', 'each stream also listens to one of N topics, room:1..room:N (?topics=); 0: none').default(0).argParser(integer('topics', 0));

/** With topicsOption, the share of sends to a topic. */
export const topicShareOption = () => new Option('--topic-share <x>', 'with --topics, the share of sends that go to a random topic instead of a user').default(0.1).argParser(share);

function share(text: string): number {
  const x = Number(text);
  if (text.trim() === '' || !(x >= 0 && x <= 1)) throw new InvalidArgumentError(`a share is a number from 0 to 1, not '${text}'`);
  return x;
}

/** The public listener and its streams: `c1m server`, `c1m edge`, and `c1m cluster`, which passes them to its edges. */
export function streamOptions(command: Command): Command {
  return command
    .addOption(new Option('--host <addr>', 'public listener address').env('C1M_HOST').default(DEFAULTS.host))
    .addOption(new Option('--port <n>', 'public listener port (streams at /test/<id>, /sse/<id>, /ws/<id>)').env('C1M_PORT').default(DEFAULTS.port).argParser(integer('port', 0)))
    .addOption(maxUserIdOption())
    .addOption(maxBacklogOption('unsent bytes per stream before it is closed as a slow consumer'))
    .addOption(new Option('--max-connections <n>', 'streams held at most, per process (default: open-file limit minus a reserve)').argParser(integer('max connections', 1)))
    .addOption(new Option('--heartbeat <seconds>', 'write an empty line to every stream this often (a comment on SSE; uWS pings WebSockets), so that proxies keep idle streams and dead peers are found (0: never)').default(DEFAULTS.heartbeatSeconds).argParser(integer('heartbeat', 0)))
    .addOption(new Option('--max-streams-per-user <n>', 'streams one user may hold at once, per process (429 above)').default(DEFAULTS.maxStreamsPerUser).argParser(integer('max streams per user', 1)))
    .addOption(new Option('--content-type <type>', "stream content type: text (text/plain) or html (the original's text/html)").choices(['text', 'html']).default('text'))
    .addOption(new Option('--stream-secret <secret>', 'require a signed token (c1m token) on every stream: /test/<id>, /sse/<id>, /ws/<id>').env('C1M_STREAM_SECRET'))
    .addOption(
      new Option('--allow-origin <origins>', "other sites whose pages may use the streams and /c1m.js, comma-separated (https://app.example.com,…), or '*' (default: none, same-origin only)")
        .env('C1M_ALLOW_ORIGIN')
        .argParser(allowOrigin),
    );
}

/** A comma-separated --allow-origin list, checked as start() checks it. */
function allowOrigin(text: string): string[] {
  const list = text.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
  try {
    checkAllowOrigin(list);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  return list;
}

/** The message history, where a process keeps one: `c1m server`, `c1m router`, and `c1m cluster`, which passes them to its router. */
export function historyOptions(command: Command): Command {
  return command
    .addOption(new Option('--history-seconds <s>', 'keep every message this long for streams that resume (0: no history, no message ids)').default(DEFAULTS.historySeconds).argParser(integer('history seconds', 0)))
    .addOption(new Option('--history-per-subject <n>', 'and at most this many per sender').default(DEFAULTS.historyPerSubject).argParser(integer('history per subject', 1)));
}

/** The backend API and the store: `c1m server`, `c1m router`, and `c1m cluster`, which passes them to its router. */
export function apiOptions(command: Command): Command {
  return command
    .addOption(new Option('--api-host <addr>', 'backend API address').env('C1M_API_HOST').default(DEFAULTS.apiHost))
    .addOption(new Option('--api-port <n>', 'backend API port').env('C1M_API_PORT').default(DEFAULTS.apiPort).argParser(integer('api port', 0)))
    .addOption(dbOption())
    .addOption(new Option('--cache-mib <n>', `SQLite page cache, MiB (default ${DEFAULT_CACHE_MIB})`).argParser(integer('cache', 1)))
    .addOption(new Option('--max-body <bytes>', 'largest backend API request body').default(DEFAULTS.maxBody).argParser(integer('max body', 1)))
    .addOption(new Option('--max-message <bytes>', 'largest message POST /send accepts (413 above; at most --max-backlog)').default(DEFAULTS.maxMessage).argParser(integer('max message', 1)))
    .addOption(new Option('--token <secret>', 'require "Authorization: Bearer <secret>" on the backend API').env('C1M_TOKEN'))
    .option('--api-insecure', 'allow the backend API on a non-loopback address without --token');
}
