import { Command, InvalidArgumentError, Option } from 'commander';
import { writeFileSync } from 'node:fs';
import { haproxyConfig, type EdgeServer, type Endpoint } from '../cluster/haproxy.js';
import { DEFAULTS } from '../server/defaults.js';
import { integer } from '../server/options.js';

/** "host:port" → Endpoint. */
const endpoint =
  (name: string) =>
  (text: string): Endpoint => {
    const match = /^(.+):(\d+)$/.exec(text);
    if (!match || Number(match[2]) > 65535) throw new InvalidArgumentError(`${name} must be host:port`);
    return { host: match[1], port: Number(match[2]) };
  };

/** "id=host:port:agentPort[:capacity]", repeatable → EdgeServer[]. */
const edgeServer = (text: string, previous: EdgeServer[] = []): EdgeServer[] => {
  const match = /^([^=]+)=([^:]+):(\d+):(\d+)(?::(\d+))?$/.exec(text);
  const ports = match ? [match[3], match[4]].map(Number) : [];
  if (!match || ports.some((p) => p < 1 || p > 65535) || match[5] === '0')
    throw new InvalidArgumentError(`'${text}' is not id=host:port:agentPort[:capacity] (e.g. edge1-0=10.201.0.11:8100:9100:5000)`);
  return [...previous, { name: match[1], host: match[2], port: ports[0], agentPort: ports[1], capacity: match[5] === undefined ? undefined : Number(match[5]) }];
};

/** `c1m haproxy-config`: prints (or writes) haproxy.cfg for the given edges. */
export function haproxyConfigCommand(): Command {
  return new Command('haproxy-config')
    .description('write haproxy.cfg that balances browsers over c1m edges by their agent-reported free capacity')
    .requiredOption('--edge <id=host:port:agentPort[:capacity]>', 'an edge (repeat for each); capacity = its --max-connections', edgeServer)
    .addOption(new Option('--bind <host:port>', 'where browsers connect').default({ host: DEFAULTS.host, port: DEFAULTS.port }, `${DEFAULTS.host}:${DEFAULTS.port}`).argParser(endpoint('--bind')))
    .addOption(new Option('--stats <host:port>', "HAProxy's statistics page").default({ host: '127.0.0.1', port: 8404 }, '127.0.0.1:8404').argParser(endpoint('--stats')))
    .option('--stats-uri <path>', 'path of the statistics page', '/haproxy')
    .addOption(new Option('--maxconn <n>', 'streams HAProxy holds at most (default: from the open-file limit)').argParser(integer('maxconn', 1)))
    .option('--out <file>', 'write here instead of stdout')
    .action((opts: { edge: EdgeServer[]; bind: Endpoint; stats: Endpoint; statsUri: string; maxconn?: number; out?: string }, command: Command) => {
      let text: string;
      try {
        text = haproxyConfig({ bind: opts.bind, stats: opts.stats, statsUri: opts.statsUri, edges: opts.edge, maxConnections: opts.maxconn });
      } catch (err) {
        command.error(`error: ${(err as Error).message}`);
      }
      if (opts.out) writeFileSync(opts.out, text);
      else process.stdout.write(text);
    });
}
