/**
 * The cluster's commands: `c1m edge`, `c1m router`, `c1m cluster` and
 * `c1m admin`. Modules are imported inside each action, so that an edge
 * process loads neither SQLite nor the API nor prom-client.
 */
import { Command, Option } from 'commander';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { CLUSTER_DEFAULTS } from '../cluster/defaults.js';
import { BUS_WAKEUPS_PER_SECOND, EDGE_ID, MIN_WINDOW_MS } from '../cluster/messages.js';
import { apiOptions, historyOptions, integer, logLevelOption, maxBacklogOption, maxUserIdOption, partitionsOption, replicasOption, streamOptions } from './options.js';

const natsOption = () => new Option('--nats <url>', 'NATS server URL(s), comma-separated; tls://host:port for TLS').env('C1M_NATS').default(CLUSTER_DEFAULTS.nats);

/** How a process proves itself to the bus and checks the bus: every command that connects to NATS. */
export function busOptions(
  command: Command,
  credsHelp = "this process's bus credentials (a file of mode 0600 holding an NKey seed; c1m nats-config writes them)",
  insecureHelp = 'allow a NATS server on a non-loopback address without --nats-creds',
): Command {
  return command
    .addOption(new Option('--nats-creds <file>', credsHelp).env('C1M_NATS_CREDS'))
    .addOption(new Option('--nats-ca <file>', "PEM certificate authorities the NATS server's TLS certificate must chain to (default: the system's)").env('C1M_NATS_CA'))
    .option('--bus-insecure', insecureHelp);
}

/** What NatsBus.connect wants from those options, once the unsafe default is refused. */
export async function busSettings(opts: { nats: string; natsCreds?: string; natsCa?: string; busInsecure?: boolean }) {
  const { checkBusSecurity } = await import('../cluster/nats-auth.js');
  checkBusSecurity(opts.nats, opts.natsCreds, opts.busInsecure);
  return { creds: opts.natsCreds, ca: opts.natsCa };
}

/** Edge ids are NATS subject tokens. */
const edgeId = (text: string): string => {
  if (!EDGE_ID.test(text)) throw new Error(`edge id '${text}': use 1-64 letters, digits, '-' or '_'`);
  return text;
};
/** A JetStream server's name: a file name here (DIR/<name>.conf) and the server's name in its cluster. */
const serverName = (text: string): string => {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(text)) throw new Error(`server name '${text}': use 1-64 letters, digits, '-' or '_'`);
  return text;
};

const defaultPrefix = () => `${hostname().replace(/[^A-Za-z0-9_-]/g, '_')}-`;

function logger(level: string, base: Record<string, unknown>): Logger {
  // As in `c1m server`: a log reader that went away must not freeze the process.
  process.stdout.on('error', () => {});
  return pino({ level, base: { pid: process.pid, ...base } }, process.stdout);
}

/** A child of `c1m cluster` stops when its supervisor's pipe closes: no orphans, even if the supervisor is killed. */
function exitWithSupervisor(stop: () => unknown): void {
  if (!process.env.C1M_SUPERVISED) return;
  process.stdin.on('end', stop).on('error', stop).resume();
}

/** What an edge takes beyond the stream options, shared by `c1m edge` and `c1m cluster` (which passes them on). */
function edgeOptions(command: Command): Command {
  return streamOptions(command)
    .addOption(new Option('--drain-rate <n>', 'streams closed per second while draining').default(CLUSTER_DEFAULTS.drainRate).argParser(integer('drain rate', 1)))
    .addOption(new Option('--presence-ms <ms>', `stream logins and logouts go to the routers in batches at most this often (default: ${MIN_WINDOW_MS} ms; c1m cluster: edges × ${1000 / BUS_WAKEUPS_PER_SECOND} ms when longer)`).argParser(integer('presence ms', 0)))
    .addOption(logLevelOption());
}

/** What a router takes beyond the API options, shared by `c1m router` and `c1m cluster`. */
function routerOptions(command: Command): Command {
  return historyOptions(apiOptions(command))
    .addOption(new Option('--batch-ms <ms>', `deliver batches leave at most once per window, at once after a quiet spell (0: every event-loop turn; default: ${MIN_WINDOW_MS} ms, or edges × ${1000 / BUS_WAKEUPS_PER_SECOND} ms when longer)`).argParser(integer('batch ms', 0)))
    .addOption(new Option('--edge-timeout <ms>', 'drop an edge not heard from for this long').default(CLUSTER_DEFAULTS.edgeTimeoutMs).argParser(integer('edge timeout', 500)))
    .addOption(partitionsOption())
    .addOption(replicasOption());
}

interface NatsConfigFlags {
  dir: string;
  edges: string[];
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsSelfSigned?: string;
  jetstream?: string;
  storeDir?: string;
  clusterListen?: string;
  routes?: string[];
}

export function clusterCommands(): Command[] {
  const edge = busOptions(edgeOptions(new Command('edge').description('run one edge: public comet streams, fed by the routers over NATS (no store, no API)')))
    .addOption(natsOption())
    .addOption(new Option('--id <id>', 'edge id, unique in the cluster and stable across restarts (default: <hostname>-<pid>)').argParser(edgeId))
    .addOption(new Option('--agent-port <n>', "serve HAProxy's agent check (free capacity as a weight) on this port").argParser(integer('agent port', 0)))
    .option('--share-port', 'join sibling edges already listening on --port (SO_REUSEPORT; c1m cluster passes it) instead of refusing a port in use')
    .action(async (opts) => {
      const id: string = opts.id ?? `${defaultPrefix()}${process.pid}`;
      const log = logger(opts.logLevel, { role: 'edge', edge: id });
      const [{ startEdge }, { NatsBus }, { edgeInbox }, { checkStreamSecret }] = await Promise.all([
        import('../cluster/edge.js'),
        import('../cluster/nats-bus.js'),
        import('../cluster/nats-auth.js'),
        import('../server/auth.js'),
      ]);
      // Before connecting: a bus that is down would keep the process retrying, silent about its settings.
      checkStreamSecret(opts.streamSecret);
      const bus = await NatsBus.connect(opts.nats, { name: `c1m-edge-${id}`, inboxPrefix: edgeInbox(id), ...(await busSettings(opts)) }, {
        // Routers may have dropped this edge during the outage; they ask for a snapshot when they hear it again.
        reconnected: () => log.warn('reconnected to NATS'),
        malformed: (subject, err) => log.warn({ subject, err: err.message }, 'malformed bus message'),
        warning: (message) => log.warn(message),
      });
      const node = await startEdge({ ...opts, bus, id, exclusivePort: !opts.sharePort, heartbeatSeconds: opts.heartbeat, logger: log });
      // SIGTERM drains (clients reconnect to the other edges), SIGINT closes every stream at once.
      const stop = (now: boolean) => () => node.stop(now).then(() => process.exit(0));
      process.once('SIGTERM', stop(false));
      process.once('SIGINT', stop(true));
      exitWithSupervisor(stop(true));
    });

  const router = busOptions(routerOptions(new Command('router').description('run one router: backend API and subscription store, routing to the edges over NATS')))
    .addOption(natsOption())
    .addOption(maxUserIdOption())
    .addOption(maxBacklogOption("the edges' --max-backlog: --max-message may not exceed it"))
    .addOption(new Option('--stats-interval <seconds>', 'log the stats every so often (0: never)').default(60).argParser(integer('stats interval', 0)))
    .addOption(logLevelOption())
    .action(async (opts) => {
      const log = logger(opts.logLevel, { role: 'router' });
      const { startRouterProcess } = await import('../cluster/router-process.js');
      const node = await startRouterProcess({ ...opts, ...(await busSettings(opts)), cacheMiB: opts.cacheMib, edgeTimeoutMs: opts.edgeTimeout, logger: log });
      if (opts.statsInterval > 0) setInterval(() => log.info(node.stats(), 'stats'), opts.statsInterval * 1000).unref();
      let closing: Promise<void> | undefined;
      const stop = () => (closing ??= node.close().then(() => process.exit(0)));
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      exitWithSupervisor(stop);
    });

  const cluster = busOptions(
    routerOptions(edgeOptions(new Command('cluster').description('run nats-server, a router and N edges on this host, supervised'))),
    'with --nats: the credentials file its children use, or a directory written by c1m nats-config (edge <id> reads edge-<id>.creds, routers router.creds)',
    'with --nats: allow a non-loopback NATS server without --nats-creds; without: start nats-server with no users (anyone who reaches it may do anything)',
  )
    .addOption(new Option('--edges <n>', 'edge processes (default: enough for --connections, else one per core)').argParser(integer('edges', 1)))
    .addOption(new Option('--connections <n>', 'streams the cluster should hold; sizes --edges from the open-file limit').argParser(integer('connections', 1)))
    .addOption(new Option('--routers <n>', 'router processes (they share the API port and split the sends; with a history, the holder of each partition\'s lease takes its sends, see --partitions, and the others stand by)').default(1).argParser(integer('routers', 0)))
    .option('--no-router', 'edges only (their routers run on another host)')
    .addOption(new Option('--nats <url>', 'use this NATS server instead of starting one').env('C1M_NATS'))
    .addOption(new Option('--nats-host <addr>', 'address of the nats-server this command starts').default('127.0.0.1'))
    .addOption(new Option('--nats-port <n>', 'port of the nats-server this command starts').default(4222).argParser(integer('nats port', 0)))
    .option('--nats-tls', 'the nats-server this command starts speaks TLS only, with a certificate authority it makes (openssl) in --state-dir')
    .addOption(
      new Option('--state-dir <dir>', "where the started nats-server's configuration and every role's credentials are written, mode 0600 (default: a new temporary directory, removed at exit)"),
    )
    .addOption(new Option('--agent-port <base>', "edge i serves HAProxy's agent check on base+i").argParser(integer('agent port', 1)))
    .addOption(new Option('--edge-id-prefix <prefix>', 'edge i is <prefix><i> (default: <hostname>-)').argParser(edgeId))
    .option(
      '--port-per-edge',
      'edge i listens on --port + i instead of all sharing --port (SO_REUSEPORT), so a balancer (HAProxy) can address, weigh and drain each edge; ' +
        '--port 0: a free port each, kept across restarts. An edge host: --no-router --nats <url> --port-per-edge --agent-port <base>',
    )
    .action(async (opts, command: Command) => {
      const log = logger(opts.logLevel, { role: 'cluster' });
      const { runCluster, ClusterOptionError } = await import('../cluster/run.js');
      try {
        await runCluster({ ...opts, edgeIdPrefix: opts.edgeIdPrefix ?? defaultPrefix(), logger: log });
      } catch (err) {
        if (err instanceof ClusterOptionError) command.error(`error: ${err.message}`);
        throw err;
      }
    });

  const admin = new Command('admin').description('operate a running cluster over NATS');
  for (const [verb, help] of [
    ['drain', 'stop an edge taking streams and close its streams at --rate per second, so clients reconnect elsewhere'],
    ['undrain', 'let a drained edge take streams again'],
  ] as const) {
    busOptions(admin.command(verb))
      .description(help)
      .argument('<edge>', 'edge id (see the router /stats)', edgeId)
      .addOption(natsOption())
      .addOption(new Option('--rate <n>', 'streams closed per second (drain)').argParser(integer('rate', 1)))
      .action(async (id: string, opts: { nats: string; rate?: number; natsCreds?: string; natsCa?: string; busInsecure?: boolean }, command: Command) => {
        const [{ NatsBus }, { SUBJECTS }] = await Promise.all([import('../cluster/nats-bus.js'), import('../cluster/messages.js')]);
        const bus = await busSettings(opts)
          .then((settings) => NatsBus.connect(opts.nats, { name: 'c1m-admin', persistent: false, ...settings }))
          .catch((err: Error) => command.error(`error: ${err.message}`));
        try {
          const reply = await bus.request(SUBJECTS.admin(id), verb === 'drain' ? { t: 'drain', rate: opts.rate } : { t: 'undrain' });
          console.log(JSON.stringify(reply.t === 'status' ? { edge: id, ...reply.stats } : reply));
        } catch (err) {
          command.error(`error: edge ${id} did not answer (${(err as Error).message})`);
        } finally {
          await bus.close();
        }
      });
  }

  const natsConfig = new Command('nats-config')
    .description("write nats-server's configuration for the c1m bus (a user per role and edge, with subject permissions) and every role's credentials file into a directory")
    .requiredOption('--dir <dir>', 'where nats.conf and the credentials files go (mode 0600); written again, it keeps every user it has')
    .addOption(new Option('--edges <ids>', 'edge ids to add, comma-separated').default([]).argParser((text: string) => text.split(',').map(edgeId)))
    .option('--listen <host:port>', 'where nats-server listens (default: as in the directory, else 127.0.0.1:4222)')
    .option('--tls-cert <file>', "nats-server's TLS certificate (PEM; with --tls-key)")
    .option('--tls-key <file>', 'its private key (PEM)')
    .option('--tls-self-signed <hosts>', 'make a new certificate authority (DIR/ca.pem, for --nats-ca) and a server certificate for these comma-separated addresses (default: keep the TLS settings in the directory)')
    .option('--tls-ca <file>', "the CA of the brain cluster's server certificates (PEM; its routes check each other's)")
    .addOption(new Option('--jetstream <name>', "this server is <name> of the routers' JetStream (--replicas): the config goes to DIR/<name>.conf").argParser(serverName))
    .option('--store-dir <dir>', 'with --jetstream: where this server keeps its streams (default: DIR/jetstream-<name>)')
    .option('--cluster-listen <host:port>', 'with --jetstream: where this server meets the brain cluster\'s others')
    .addOption(new Option('--routes <list>', "with --cluster-listen: the other servers' cluster addresses, host:port, comma-separated").argParser((text: string) => text.split(',')))
    .action(async (opts: NatsConfigFlags, command: Command) => {
      const { makeTlsFiles, writeNatsConfig } = await import('../cluster/nats-auth.js');
      if (!opts.tlsCert !== !opts.tlsKey) command.error('error: --tls-cert and --tls-key go together');
      if (!opts.jetstream && (opts.storeDir || opts.clusterListen || opts.routes)) command.error('error: --store-dir, --cluster-listen and --routes are for a --jetstream server');
      if (!opts.clusterListen !== !opts.routes) command.error('error: --cluster-listen and --routes go together');
      const tls = opts.tlsSelfSigned ? makeTlsFiles(opts.dir, opts.tlsSelfSigned.split(',')) : opts.tlsCert ? { cert: opts.tlsCert, key: opts.tlsKey!, ca: opts.tlsCa } : undefined;
      const jetstream = opts.jetstream
        ? { name: opts.jetstream, storeDir: opts.storeDir ?? join(opts.dir, `jetstream-${opts.jetstream}`), ...(opts.clusterListen && { cluster: { listen: opts.clusterListen, routes: opts.routes! } }) }
        : undefined;
      const config = writeNatsConfig(opts.dir, { listen: opts.listen, edges: opts.edges, tls, jetstream });
      console.log(JSON.stringify({ config, run: `nats-server -c ${config}`, ca: tls && 'ca' in tls ? tls.ca : undefined }));
    });
  return [edge, router, cluster, admin, natsConfig];
}
