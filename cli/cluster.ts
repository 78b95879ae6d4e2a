/**
 * The cluster's commands: `c1m edge`, `c1m router`, `c1m cluster` and
 * `c1m admin`. Modules are imported inside each action, so that an edge
 * process loads neither SQLite nor the API nor prom-client.
 */
import { Command, Option } from 'commander';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { edgeId, type OptionsOf } from '../server/options.js';
import { addOptions } from './options.js';

/** What NatsBus.connect wants from those options, once the unsafe default is refused. */
export async function busSettings(opts: { nats: string; natsCreds?: string; natsCa?: string; busInsecure?: boolean }) {
  const { checkBusSecurity } = await import('../cluster/nats-auth.js');
  checkBusSecurity(opts.nats, opts.natsCreds, opts.busInsecure);
  return { creds: opts.natsCreds, ca: opts.natsCa };
}

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
  return [edgeCommand(), routerCommand(), clusterCommand(), adminCommand(), natsConfigCommand()];
}

/** `c1m edge`. */
function edgeCommand(): Command {
  return addOptions(new Command('edge').description('run one edge: public comet streams, fed by the routers over NATS (no store, no API)'), 'edge')
    .action(async (opts: OptionsOf<'edge'>) => {
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
      const node = await startEdge({ ...opts, bus, id, exclusivePort: !opts.sharePort, logger: log });
      // SIGTERM drains (clients reconnect to the other edges), SIGINT closes every stream at once.
      const stop = (now: boolean) => () => node.stop(now).then(() => process.exit(0));
      process.once('SIGTERM', stop(false));
      process.once('SIGINT', stop(true));
      exitWithSupervisor(stop(true));
    });
}

/** `c1m router`. */
function routerCommand(): Command {
  return addOptions(new Command('router').description('run one router: backend API and subscription store, routing to the edges over NATS'), 'router')
    .action(async (opts: OptionsOf<'router'>) => {
      const log = logger(opts.logLevel, { role: 'router' });
      const { startRouterProcess } = await import('../cluster/router-process.js');
      const node = await startRouterProcess({ ...opts, ...(await busSettings(opts)), logger: log });
      if (opts.statsInterval > 0) setInterval(() => log.info(node.stats(), 'stats'), opts.statsInterval * 1000).unref();
      let closing: Promise<void> | undefined;
      const stop = () => (closing ??= node.close().then(() => process.exit(0)));
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      exitWithSupervisor(stop);
    });
}

/** `c1m cluster`. */
function clusterCommand(): Command {
  return addOptions(new Command('cluster').description('run nats-server, a router and N edges on this host, supervised'), 'cluster')
    .action(async (opts: OptionsOf<'cluster'>, command: Command) => {
      const log = logger(opts.logLevel, { role: 'cluster' });
      const { runCluster, ClusterOptionError } = await import('../cluster/run.js');
      try {
        await runCluster({ ...opts, edgeIdPrefix: opts.edgeIdPrefix ?? defaultPrefix(), logger: log });
      } catch (err) {
        if (err instanceof ClusterOptionError) command.error(`error: ${err.message}`);
        throw err;
      }
    });
}

/** `c1m admin drain` and `c1m admin undrain`. */
function adminCommand(): Command {
  const admin = new Command('admin').description('operate a running cluster over NATS');
  for (const [verb, help] of [
    ['drain', 'stop an edge taking streams and close its streams at --rate per second, so clients reconnect elsewhere'],
    ['undrain', 'let a drained edge take streams again'],
  ] as const) {
    addOptions(admin.command(verb), `admin ${verb}`)
      .description(help)
      .argument('<edge>', 'edge id (see the router /stats)', edgeId)
      .action(async (id: string, opts: OptionsOf<'admin drain'>, command: Command) => {
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
  return admin;
}

/** `c1m nats-config`. */
function natsConfigCommand(): Command {
  return new Command('nats-config')
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
}
