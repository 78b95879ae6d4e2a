/**
 * Every command-line option of c1m, one entry each: its flag, help, default,
 * parser, environment variable, the commands that take it, the field it
 * resolves to, and how `c1m cluster` hands it to its edges and routers. From
 * this table come the commands' options (cli/options.ts), the children's
 * argv (childArgv), the resolved options' types (OptionsOf) and
 * docs/options.md (cli/options-doc.ts). It sits here, below the cluster and
 * the command line, so that start() can type its options from it too.
 */
import { InvalidArgumentError } from 'commander';
import { checkAllowOrigin } from './cors.js';
import { BUS_WAKEUPS_PER_SECOND, DEFAULTS, MIN_WINDOW_MS } from './defaults.js';
import { DEFAULT_CACHE_MIB } from '../subsmanager/defaults.js';
import { MAX_PARTITIONS } from '../subsmanager/partitions.js';

/** A parser for a safe integer >= min. */
export const integer =
  (name: string, min: number) =>
  (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return value;
  };

/** "a-b" or "a" → [a, b] of positive integers. */
export function parseIdRange(text: string, what = 'range'): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(text.trim());
  const first = Number(m?.[1]);
  const last = m?.[2] === undefined ? first : Number(m[2]);
  if (!m || !Number.isSafeInteger(first) || !Number.isSafeInteger(last) || first < 1 || last < first) throw new Error(`${what} '${text}' is not N or N-M with 1 <= N <= M`);
  return [first, last];
}

/** Edge ids become NATS subject tokens: keep them to safe characters. */
export const EDGE_ID = /^[A-Za-z0-9_-]{1,64}$/;

export const edgeId = (text: string): string => {
  if (!EDGE_ID.test(text)) throw new Error(`edge id '${text}': use 1-64 letters, digits, '-' or '_'`);
  return text;
};

function share(text: string): number {
  const x = Number(text);
  if (text.trim() === '' || !(x >= 0 && x <= 1)) throw new InvalidArgumentError(`a share is a number from 0 to 1, not '${text}'`);
  return x;
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

function partitions(text: string): number {
  const n = integer('partitions', 1)(text);
  if (n > MAX_PARTITIONS) throw new InvalidArgumentError(`partitions must be at most ${MAX_PARTITIONS}`);
  return n;
}

/** JetStream keeps a stream on at most 5 servers. */
const MAX_REPLICAS = 5;

function replicas(text: string): number {
  const n = integer('replicas', 1)(text);
  if (n > MAX_REPLICAS) throw new InvalidArgumentError(`replicas must be at most ${MAX_REPLICAS} (JetStream's limit)`);
  return n;
}

/** "1000,2000,4000" → sends/s per step. */
const rateList = (text: string): number[] => text.split(',').map((part) => integer('msg rate', 1)(part.trim()));

/** The commands whose options are all in the table. */
export const COMMANDS = ['server', 'edge', 'router', 'cluster', 'run', 'admin drain', 'admin undrain'] as const;
/** The commands that take some of the table's options beside options of their own. */
export const SHARING_COMMANDS = ['subs add', 'subs remove', 'subs get', 'friends load', 'friends snapshot', 'friends stats', 'loadgen flood', 'loadgen msggen'] as const;
export type CommandName = (typeof COMMANDS)[number] | (typeof SHARING_COMMANDS)[number];

export interface OptionEntry {
  /** The resolved field: the command stores the value under it, and start(), startEdge()… take it by that name. */
  readonly name: string;
  readonly flag: string;
  readonly help: string;
  readonly commands: readonly CommandName[];
  readonly default?: unknown;
  /** How the help shows a default that is no plain value. */
  readonly defaultHelp?: string;
  readonly parse?: (text: string) => unknown;
  readonly choices?: readonly string[];
  readonly env?: string;
  /** The option that may not be given with this one (its name). */
  readonly conflicts?: string;
  /** How `c1m cluster` hands it to the edges and routers that take it: on their command line, or in their environment (secrets, which `ps` would show). */
  readonly child?: 'argv' | 'env';
}

const HISTORY_COMMANDS = ['server', 'router', 'cluster', 'run'] as const;
const STREAM_COMMANDS = ['server', 'edge', 'cluster'] as const;
const API_COMMANDS = ['server', 'router', 'cluster'] as const;
const BUS_CLIENTS = ['edge', 'router', 'admin drain', 'admin undrain'] as const;
/** The friends commands that write a replicated store, as a router. */
const STORE_WRITERS = ['friends load', 'friends snapshot'] as const;

export const OPTIONS = [
  // The public listener and its streams.
  { name: 'host', flag: '--host <addr>', help: 'public listener address', env: 'C1M_HOST', default: DEFAULTS.host, commands: STREAM_COMMANDS, child: 'argv' },
  { name: 'port', flag: '--port <n>', help: 'public listener port (streams at /test/<id>, /sse/<id>, /ws/<id>)', env: 'C1M_PORT', default: DEFAULTS.port, parse: integer('port', 0), commands: STREAM_COMMANDS, child: 'argv' },
  { name: 'maxUserId', flag: '--max-user-id <n>', help: 'highest user id accepted', default: DEFAULTS.maxUserId, parse: integer('max user id', 1), commands: ['server', 'edge', 'router', 'cluster', 'subs add'], child: 'argv' },
  { name: 'maxBacklog', flag: '--max-backlog <bytes>', help: 'unsent bytes per stream before it is closed as a slow consumer', default: DEFAULTS.maxBacklog, parse: integer('max backlog', 1), commands: STREAM_COMMANDS, child: 'argv' },
  { name: 'maxBacklog', flag: '--max-backlog <bytes>', help: "the edges' --max-backlog: --max-message may not exceed it", default: DEFAULTS.maxBacklog, parse: integer('max backlog', 1), commands: ['router'], child: 'argv' },
  { name: 'maxConnections', flag: '--max-connections <n>', help: 'streams held at most, per process (default: open-file limit minus a reserve)', parse: integer('max connections', 1), commands: STREAM_COMMANDS, child: 'argv' },
  {
    name: 'heartbeatSeconds',
    flag: '--heartbeat <seconds>',
    help: 'write an empty line to every stream silent this long (a comment on SSE; uWS pings WebSockets), so that proxies keep idle streams and dead peers are found (0: never)',
    default: DEFAULTS.heartbeatSeconds,
    parse: integer('heartbeat', 0),
    commands: STREAM_COMMANDS,
    child: 'argv',
  },
  { name: 'heartbeatSeconds', flag: '--heartbeat <seconds>', help: "the streams' heartbeat (c1m cluster --heartbeat; 0: none)", default: DEFAULTS.heartbeatSeconds, parse: integer('heartbeat', 0), commands: ['run'] },
  { name: 'maxStreamsPerUser', flag: '--max-streams-per-user <n>', help: 'streams one user may hold at once, per process (429 above)', default: DEFAULTS.maxStreamsPerUser, parse: integer('max streams per user', 1), commands: STREAM_COMMANDS, child: 'argv' },
  { name: 'contentType', flag: '--content-type <type>', help: "stream content type: text (text/plain) or html (the original's text/html)", choices: ['text', 'html'], default: 'text', commands: STREAM_COMMANDS, child: 'argv' },
  { name: 'streamSecret', flag: '--stream-secret <secret>', help: 'require a signed token (c1m token) on every stream: /test/<id>, /sse/<id>, /ws/<id>', env: 'C1M_STREAM_SECRET', commands: STREAM_COMMANDS, child: 'env' },
  {
    name: 'allowOrigin',
    flag: '--allow-origin <origins>',
    help: "other sites whose pages may use the streams and /c1m.js, comma-separated (https://app.example.com,…), or '*' (default: none, same-origin only)",
    env: 'C1M_ALLOW_ORIGIN',
    parse: allowOrigin,
    commands: STREAM_COMMANDS,
    child: 'argv',
  },

  // The backend API and the store.
  { name: 'apiHost', flag: '--api-host <addr>', help: 'backend API address', env: 'C1M_API_HOST', default: DEFAULTS.apiHost, commands: API_COMMANDS, child: 'argv' },
  { name: 'apiPort', flag: '--api-port <n>', help: 'backend API port', env: 'C1M_API_PORT', default: DEFAULTS.apiPort, parse: integer('api port', 0), commands: API_COMMANDS, child: 'argv' },
  { name: 'db', flag: '--db <path>', help: 'SQLite subscription store', env: 'C1M_DB', default: DEFAULTS.db, commands: [...API_COMMANDS, 'subs add', 'subs remove', 'subs get', 'friends load', 'friends snapshot', 'friends stats'], child: 'argv' },
  { name: 'db', flag: '--db <path>', help: 'subscription store; loaded with the graph unless it holds it (default: ./data/friends-<users>x<m>.db)', commands: ['run'] },
  { name: 'cacheMiB', flag: '--cache-mib <n>', help: `SQLite page cache, MiB (default ${DEFAULT_CACHE_MIB})`, parse: integer('cache', 1), commands: API_COMMANDS, child: 'argv' },
  { name: 'mmapMiB', flag: '--mmap-mib <n>', help: 'SQLite memory-mapped window over the store, MiB (0: off)', default: 0, parse: integer('mmap', 0), commands: API_COMMANDS, child: 'argv' },
  { name: 'warmCache', flag: '--warm-cache', help: 'read the subscriptions table into the page cache at start (size --cache-mib to hold it)', commands: API_COMMANDS, child: 'argv' },
  { name: 'maxBody', flag: '--max-body <bytes>', help: 'largest backend API request body', default: DEFAULTS.maxBody, parse: integer('max body', 1), commands: API_COMMANDS, child: 'argv' },
  { name: 'maxMessage', flag: '--max-message <bytes>', help: 'largest message POST /send accepts (413 above; at most --max-backlog)', default: DEFAULTS.maxMessage, parse: integer('max message', 1), commands: API_COMMANDS, child: 'argv' },
  { name: 'token', flag: '--token <secret>', help: 'require "Authorization: Bearer <secret>" on the backend API', env: 'C1M_TOKEN', commands: API_COMMANDS, child: 'env' },
  { name: 'apiInsecure', flag: '--api-insecure', help: 'allow the backend API on a non-loopback address without --token', commands: API_COMMANDS, child: 'argv' },
  { name: 'demo', flag: '--demo', help: 'if the store is empty, add a small demo friends graph and print what to try', commands: ['server'] },

  // The message history.
  { name: 'historySeconds', flag: '--history-seconds <s>', help: 'keep every message this long for streams that resume (0: no history, no message ids)', default: DEFAULTS.historySeconds, parse: integer('history seconds', 0), commands: HISTORY_COMMANDS, child: 'argv' },
  { name: 'historyPerSubject', flag: '--history-per-subject <n>', help: 'and at most this many per sender', default: DEFAULTS.historyPerSubject, parse: integer('history per subject', 1), commands: HISTORY_COMMANDS, child: 'argv' },

  // The routers.
  {
    name: 'batchMs',
    flag: '--batch-ms <ms>',
    help: `deliver batches leave at most once per window, at once after a quiet spell (0: every event-loop turn; default: ${MIN_WINDOW_MS} ms, or edges × ${1000 / BUS_WAKEUPS_PER_SECOND} ms when longer)`,
    parse: integer('batch ms', 0),
    commands: ['router', 'cluster'],
    child: 'argv',
  },
  { name: 'batchMs', flag: '--batch-ms <ms>', help: "the router's batch window (c1m cluster --batch-ms)", parse: integer('batch ms', 0), commands: ['run'] },
  { name: 'edgeTimeoutMs', flag: '--edge-timeout <ms>', help: 'drop an edge not heard from for this long', default: DEFAULTS.edgeTimeoutMs, parse: integer('edge timeout', 500), commands: ['router', 'cluster'], child: 'argv' },
  {
    name: 'partitions',
    flag: '--partitions <n>',
    help: `partitions of the subjects, each numbered by its own router (one history and lease each; the same for every router of a cluster; at most ${MAX_PARTITIONS})`,
    default: 1,
    parse: partitions,
    commands: ['router', 'cluster', 'run'],
    child: 'argv',
  },
  {
    name: 'replicas',
    flag: '--replicas <n>',
    help: `keep the brain (histories, leases, subscription changes) on JetStream, each stream on this many nats-servers (at most ${MAX_REPLICAS}); c1m cluster then starts that many, clustered`,
    parse: replicas,
    commands: ['router', 'cluster', 'run'],
    child: 'argv',
  },

  {
    name: 'snapshotMiB',
    flag: '--snapshot-mib <n>',
    help:
      "with --replicas and a history: the router leading partition 0 writes a snapshot of the subscription store and purges the store's stream up to it " +
      'once the stream holds more bytes than its view, and more than this many MiB (0: never; c1m friends snapshot writes one by hand)',
    default: DEFAULTS.snapshotMiB,
    parse: integer('snapshot MiB', 0),
    commands: ['router', 'cluster'],
    child: 'argv',
  },

  // The edges.
  { name: 'drainRate', flag: '--drain-rate <n>', help: 'streams closed per second while draining', default: DEFAULTS.drainRate, parse: integer('drain rate', 1), commands: ['edge', 'cluster'], child: 'argv' },
  {
    name: 'presenceMs',
    flag: '--presence-ms <ms>',
    help: `stream logins and logouts go to the routers in batches at most this often (default: ${MIN_WINDOW_MS} ms; c1m cluster: edges × ${1000 / BUS_WAKEUPS_PER_SECOND} ms when longer)`,
    parse: integer('presence ms', 0),
    commands: ['edge', 'cluster'],
    child: 'argv',
  },
  { name: 'id', flag: '--id <id>', help: 'edge id, unique in the cluster and stable across restarts (default: <hostname>-<pid>)', parse: edgeId, commands: ['edge'], child: 'argv' },
  { name: 'agentPort', flag: '--agent-port <n>', help: "serve HAProxy's agent check (free capacity as a weight) on this port", parse: integer('agent port', 0), commands: ['edge'], child: 'argv' },
  { name: 'agentPort', flag: '--agent-port <base>', help: "edge i serves HAProxy's agent check on base+i", parse: integer('agent port', 1), commands: ['cluster'] },
  { name: 'sharePort', flag: '--share-port', help: 'join sibling edges already listening on --port (SO_REUSEPORT; c1m cluster passes it) instead of refusing a port in use', commands: ['edge'], child: 'argv' },
  { name: 'rate', flag: '--rate <n>', help: 'streams closed per second (drain)', parse: integer('rate', 1), commands: ['admin drain', 'admin undrain'] },

  // The bus.
  { name: 'nats', flag: '--nats <url>', help: 'NATS server URL(s), comma-separated; tls://host:port for TLS', env: 'C1M_NATS', default: DEFAULTS.nats, commands: BUS_CLIENTS, child: 'argv' },
  { name: 'nats', flag: '--nats <url>', help: 'use this NATS server instead of starting one', env: 'C1M_NATS', commands: ['cluster'] },
  { name: 'natsCreds', flag: '--nats-creds <file>', help: "this process's bus credentials (a file of mode 0600 holding an NKey seed; c1m nats-config writes them)", env: 'C1M_NATS_CREDS', commands: BUS_CLIENTS, child: 'argv' },
  {
    name: 'natsCreds',
    flag: '--nats-creds <file>',
    help: 'with --nats: the credentials file its children use, or a directory written by c1m nats-config (edge <id> reads edge-<id>.creds, routers router.creds)',
    env: 'C1M_NATS_CREDS',
    commands: ['cluster'],
  },
  { name: 'natsCreds', flag: '--nats-creds <file>', help: "with --nats: a router's bus credentials file (only routers may write the store's stream)", env: 'C1M_NATS_CREDS', commands: ['friends load'] },
  { name: 'natsCreds', flag: '--nats-creds <file>', help: "a router's bus credentials file", env: 'C1M_NATS_CREDS', commands: ['friends snapshot'] },
  { name: 'natsCa', flag: '--nats-ca <file>', help: "PEM certificate authorities the NATS server's TLS certificate must chain to (default: the system's)", env: 'C1M_NATS_CA', commands: [...BUS_CLIENTS, 'cluster', ...STORE_WRITERS], child: 'argv' },
  { name: 'busInsecure', flag: '--bus-insecure', help: 'allow a NATS server on a non-loopback address without --nats-creds', commands: [...BUS_CLIENTS, ...STORE_WRITERS], child: 'argv' },
  { name: 'busInsecure', flag: '--bus-insecure', help: 'with --nats: allow a non-loopback NATS server without --nats-creds; without: start nats-server with no users (anyone who reaches it may do anything)', commands: ['cluster'] },

  // What `c1m cluster` starts.
  { name: 'edges', flag: '--edges <n>', help: 'edge processes (default: enough for --connections, else one per core)', parse: integer('edges', 1), commands: ['cluster'] },
  { name: 'connections', flag: '--connections <n>', help: 'streams the cluster should hold; sizes --edges from the open-file limit', parse: integer('connections', 1), commands: ['cluster'] },
  {
    name: 'routers',
    flag: '--routers <n>',
    help: "router processes (they share the API port and split the sends; with a history, the holder of each partition's lease takes its sends, see --partitions, and the others stand by)",
    default: 1,
    parse: integer('routers', 0),
    commands: ['cluster'],
  },
  { name: 'router', flag: '--no-router', help: 'edges only (their routers run on another host)', commands: ['cluster'] },
  { name: 'natsHost', flag: '--nats-host <addr>', help: 'address of the nats-server this command starts', default: '127.0.0.1', commands: ['cluster'] },
  { name: 'natsPort', flag: '--nats-port <n>', help: 'port of the nats-server this command starts', default: 4222, parse: integer('nats port', 0), commands: ['cluster'] },
  { name: 'natsTls', flag: '--nats-tls', help: 'the nats-server this command starts speaks TLS only, with a certificate authority it makes (openssl) in --state-dir', commands: ['cluster'] },
  { name: 'stateDir', flag: '--state-dir <dir>', help: "where the started nats-server's configuration and every role's credentials are written, mode 0600 (default: a new temporary directory, removed at exit)", commands: ['cluster'] },
  { name: 'edgeIdPrefix', flag: '--edge-id-prefix <prefix>', help: 'edge i is <prefix><i> (default: <hostname>-)', parse: edgeId, commands: ['cluster'] },
  {
    name: 'portPerEdge',
    flag: '--port-per-edge',
    help:
      'edge i listens on --port + i instead of all sharing --port (SO_REUSEPORT), so a balancer (HAProxy) can address, weigh and drain each edge; ' +
      '--port 0: a free port each, kept across restarts. An edge host: --no-router --nats <url> --port-per-edge --agent-port <base>',
    commands: ['cluster'],
  },

  // `c1m run`: the graph, the cluster, the flood and the messages.
  { name: 'connections', flag: '--connections <n>', help: 'streams to open and hold', default: 1_000_000, parse: integer('connections', 1), commands: ['run'] },
  { name: 'users', flag: '--users <n>', help: 'friends graph: users', default: 1_000_000, parse: integer('users', 2), commands: ['run'] },
  { name: 'm', flag: '--m <m>', help: 'friends graph: edges each new user brings (Barabási–Albert)', default: 15, parse: integer('m', 1), commands: ['run'] },
  { name: 'seed', flag: '--seed <s>', help: 'friends graph: random seed', default: 1, parse: integer('seed', 0), commands: ['run'] },
  { name: 'edges', flag: '--edges <n>', help: 'edge processes (default: enough for --connections at the open-file limit)', parse: integer('edges', 1), commands: ['run'] },
  { name: 'routers', flag: '--routers <n>', help: 'router processes (c1m cluster --routers; with a history, one leads each partition and the others stand by)', default: 1, parse: integer('routers', 1), commands: ['run'] },
  { name: 'src', flag: '--src <addrs>', help: 'flood source addresses: A-B or a comma list (each gives --ports local ports)', default: '127.0.1.1-127.0.1.40', commands: ['run'] },
  { name: 'ports', flag: '--ports <range>', help: 'local ports each source address binds', default: [10000, 65535], defaultHelp: '10000-65535', parse: (text: string) => parseIdRange(text, 'ports'), commands: ['run'] },
  { name: 'rate', flag: '--rate <n>', help: 'connects per second during the ramp', default: 10000, parse: integer('rate', 1), commands: ['run'] },
  { name: 'concurrency', flag: '--concurrency <n>', help: 'connects waiting for their welcome at most', default: 2000, parse: integer('concurrency', 1), commands: ['run'] },
  { name: 'hold', flag: '--hold <s>', help: 'seconds to hold every stream before the messages', default: 60, parse: integer('hold', 0), commands: ['run'] },
  { name: 'msgSeconds', flag: '--msg-seconds <s>', help: 'seconds of messages (per rate with --msg-rates)', default: 60, parse: integer('msg seconds', 1), commands: ['run'] },
  {
    name: 'warmup',
    flag: '--warmup <s>',
    help: 'seconds of messages at the first rate before the measured ones, not reported as a step (V8 compiles the delivery path in every edge meanwhile)',
    default: 10,
    parse: integer('warmup', 0),
    commands: ['run'],
  },
  { name: 'msgRate', flag: '--msg-rate <n>', help: 'one fixed send rate instead of the generators', parse: integer('msg rate', 1), conflicts: 'msgRates', commands: ['run'] },
  { name: 'msgRates', flag: '--msg-rates <list>', help: 'steps of fixed send rates, e.g. 1000,2000,4000: reports the highest sustained at p99 <= 100 ms', parse: rateList, commands: ['run'] },
  { name: 'generators', flag: '--generators <n>', help: "the original's generators (when no rate is given)", default: 1000, parse: integer('generators', 1), commands: ['run'] },
  { name: 'sendInterval', flag: '--send-interval <ms>', help: 'each generator waits a random MIN-MAX ms between sends', default: [10, 110], defaultHelp: '10-110', parse: (text: string) => parseIdRange(text, 'send interval'), commands: ['run'] },
  {
    name: 'msgConnections',
    flag: '--msg-connections <n>',
    help: 'keep-alive connections from msggen to the API (each carries one request at a time: on a saturated box, 16 held 2,000 sends/s back)',
    default: 128,
    parse: integer('msg connections', 1),
    commands: ['run'],
  },
  { name: 'transport', flag: '--transport <transport>', help: 'streams to open: chunked (/test/<id>), sse (/sse/<id>) or ws (/ws/<id>)', choices: ['chunked', 'sse', 'ws'], default: 'chunked', commands: ['run', 'loadgen flood'] },
  { name: 'topics', flag: '--topics <n>', help: 'each stream also listens to one of N topics, room:1..room:N (?topics=); 0: none', default: 0, parse: integer('topics', 0), commands: ['run', 'loadgen flood', 'loadgen msggen'] },
  { name: 'topicShare', flag: '--topic-share <x>', help: 'with --topics, the share of sends that go to a random topic instead of a user', default: 0.1, parse: share, commands: ['run', 'loadgen msggen'] },
  {
    name: 'readEveryMs',
    flag: '--read-every <ms>',
    help: 'flood workers read every MS once all streams are open, instead of being woken by each chunk (0: woken); deliveries are timed at arrival either way',
    default: 50,
    parse: integer('read every', 0),
    commands: ['run'],
  },
  { name: 'out', flag: '--out <dir>', help: 'report folder (default: reports/<timestamp>)', commands: ['run'] },
  { name: 'maxSeconds', flag: '--max-seconds <s>', help: 'hard stop, counted from the cluster start (default: 3 x the planned ramp + hold + messages + 180)', parse: integer('max seconds', 1), commands: ['run'] },

  // Every long-running process.
  { name: 'logLevel', flag: '--log-level <level>', help: 'log level', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'silent'], default: 'info', commands: ['server', 'edge', 'router', 'cluster'], child: 'argv' },
  { name: 'statsInterval', flag: '--stats-interval <seconds>', help: 'log the stats every so often (0: never)', default: 60, parse: integer('stats interval', 0), commands: ['server', 'router'] },
] as const satisfies readonly OptionEntry[];

type Entry = (typeof OPTIONS)[number];
/** The entries among E that command C takes. */
type Taking<E, C> = E extends { commands: readonly (infer Taker)[] } ? (C extends Taker ? E : never) : never;
type ValueOf<E> = E extends { parse: (text: string) => infer T } ? T : E extends { choices: readonly (infer Choice)[] } ? Choice : E extends { flag: `${string}<${string}` } ? string : boolean;
/** Always set once parsed: a default, or a --no- flag's true. */
type Always<E> = E extends { default: unknown } | { flag: `--no-${string}` } ? true : false;
type Simplify<T> = { [K in keyof T]: T[K] };

/** What command C's options resolve to, field by field, as the command line parses them. */
export type OptionsOf<C extends CommandName> = Simplify<
  { [E in Taking<Entry, C> as Always<E> extends true ? E['name'] : never]: ValueOf<E> } & { [E in Taking<Entry, C> as Always<E> extends true ? never : E['name']]?: ValueOf<E> }
>;

/** Command C's entries, in table order. */
export const optionsOf = (command: CommandName): OptionEntry[] => OPTIONS.filter((entry: OptionEntry) => entry.commands.includes(command));

/** `--max-backlog <bytes>` → `--max-backlog`. */
export const flagOf = (entry: OptionEntry): string => entry.flag.split(' ')[0];

/**
 * The command line and environment that give a child process (`c1m edge`, `c1m router`) these values: every option of
 * the child that the table says its parent hands on, and that is set.
 */
export const childArgv = <C extends CommandName>(command: C, values: Partial<OptionsOf<C>>) => commandLine(command, values, (entry) => entry.child !== undefined);

/** The command line and environment that give `c1m <command>` these values, every one that is set (`c1m run` starts `c1m cluster` so). */
export const commandArgv = <C extends CommandName>(command: C, values: Partial<OptionsOf<C>>) => commandLine(command, values, () => true);

/**
 * The options of `command` that `passed` takes and `values` sets: each on the command line, a list comma-separated,
 * true as the bare flag (false, for a --no- flag); a secret (child: 'env') in the environment instead, which `ps` does not show.
 */
function commandLine(command: CommandName, values: object, passed: (entry: OptionEntry) => boolean): { argv: string[]; env: Record<string, string> } {
  const argv: string[] = [];
  const env: Record<string, string> = {};
  for (const entry of optionsOf(command)) {
    const value: unknown = (values as Record<string, unknown>)[entry.name];
    const negated = entry.flag.startsWith('--no-');
    if (!passed(entry) || value === undefined || value === negated) continue;
    const text = Array.isArray(value) ? value.join(',') : String(value);
    if (entry.child === 'env') env[entry.env!] = text;
    else argv.push(...(typeof value === 'boolean' ? [flagOf(entry)] : [flagOf(entry), text]));
  }
  return { argv, env };
}
