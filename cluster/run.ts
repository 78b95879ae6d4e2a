/** `c1m cluster`: what to start, in which order, with which arguments. */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { checkStreamSecret } from '../server/auth.js';
import { pausesAt, streamCapacity } from '../server/limits.js';
import { assertPortFree } from '../server/listener.js';
import { childArgv, type OptionsOf } from '../server/options.js';
import { busWindowMs } from './messages.js';
import { checkBusSecurity, credsFile, makeTlsFiles, writeNatsConfig, type BusRole } from './nats-auth.js';
import { cliCommand, ensureMigrateReq, freePort, freePorts, Supervisor, type ChildSpec } from './supervisor.js';

/** `c1m cluster`'s options under their resolved names (server/options.ts), its edges' id prefix resolved. */
export type ClusterOptions = OptionsOf<'cluster'> & { edgeIdPrefix: string; logger: Logger };

/**
 * Scheduling priorities. There are dozens of edges and one router, which every
 * send passes through, then nats-server: on a saturated host the kernel's fair
 * share would give the router 1/N of the CPU, and at a milder nice value its
 * garbage collections and event loop still waited for a core (the README's
 * cluster section has the measurements). Raising the router and NATS needs
 * root; lowering the edges does not.
 */
const ROUTER_NICE = -20;
export const NATS_NICE = -10;
const EDGE_NICE = 5;

/** Edges needed to take `connections` streams when each may hold `perEdge`: each stops listening a little before, at pausesAt(perEdge). */
export function edgesFor(connections: number, perEdge: number): number {
  return Math.max(1, Math.ceil(connections / pausesAt(perEdge)));
}

/** A usage error: `c1m cluster` prints it as such, before starting anything. */
export class ClusterOptionError extends Error {}

/**
 * With --port-per-edge, edge i takes --port + i and --agent-port + i. Both ranges must fit below
 * 65536 and must not overlap, or an edge would fail to start (and restart forever) on a port its sibling holds.
 */
function checkPortsPerEdge(port: number, agentPort: number | undefined, edges: number): void {
  const ranges = [['--port', port], ['--agent-port', agentPort]] as const;
  for (const [name, base] of ranges)
    if (base && base + edges - 1 > 65535) throw new ClusterOptionError(`${name} ${base} + ${edges} edges goes past port 65535`);
  if (port && agentPort && port < agentPort + edges && agentPort < port + edges)
    throw new ClusterOptionError(`--port ${port}..${port + edges - 1} and --agent-port ${agentPort}..${agentPort + edges - 1} overlap`);
}

/**
 * Router i's store. With --replicas each router's file is its own view of the replicated store (two applying one
 * file would apply every change twice): `data/c1m.db` → `data/c1m.router-1.db`; router 0 keeps the name given.
 */
export const routerDb = (o: Pick<ClusterOptions, 'db' | 'replicas'>, i: number): string =>
  !o.replicas || i === 0 || o.db === ':memory:' ? o.db : `${o.db.replace(/\.db$/, '')}.router-${i}.db`;

/** The bus as `c1m cluster` gives it to a child: every field set, so that none of the cluster's own goes through. */
interface ChildBus {
  natsCreds: string | undefined;
  natsCa: string | undefined;
  busInsecure: boolean | undefined;
}

/** Router i's command line and environment: every router option the cluster passes on (server/options.ts), with its own store file, API port and bus. */
export const routerChild = (o: OptionsOf<'cluster'>, own: { db: string; apiPort: number; nats: string } & ChildBus) => childArgv('router', { ...o, ...own });

/** Edge i's command line and environment: every edge option the cluster passes on, with its own id, ports, presence window and bus. */
export const edgeChild = (o: OptionsOf<'cluster'>, own: { id: string; port: number; agentPort: number | undefined; presenceMs: number; sharePort: boolean; nats: string } & ChildBus) =>
  childArgv('edge', { ...o, ...own });

/** `list` from its i-th entry on, wrapping around. */
const rotate = <T>(list: T[], i: number): T[] => list.map((_, k) => list[(i + k) % list.length]);

/**
 * The bus of `c1m cluster`: one nats-server, or with --replicas R, R of them clustered with JetStream (each its store
 * under the state directory), supervised. Returns their client ports.
 */
async function startNatsServers(
  supervisor: Supervisor,
  o: Pick<ClusterOptions, 'natsHost' | 'natsPort' | 'replicas'> & { dir: string; tls?: ReturnType<typeof makeTlsFiles>; insecure?: boolean; edges: string[] },
): Promise<number[]> {
  const count = o.replicas ?? 1;
  const ports = [o.natsPort || (await freePort(o.natsHost)), ...(await freePorts(o.natsHost, count - 1))];
  const clusterPorts = count > 1 ? await freePorts(o.natsHost, count) : [];
  const at = (port: number) => `${o.natsHost}:${port}`;
  const args = (i: number): string[] => {
    const name = `nats-${i}`;
    const jetstream = o.replicas ? { name, storeDir: join(o.dir, `jetstream-${i}`), ...(count > 1 && { cluster: { listen: at(clusterPorts[i]), routes: clusterPorts.filter((_, k) => k !== i).map(at) } }) } : undefined;
    if (!o.insecure) return ['-c', writeNatsConfig(o.dir, { listen: at(ports[i]), edges: o.edges, tls: o.tls, jetstream })];
    const plain = ['-a', o.natsHost, '-p', String(ports[i])];
    if (!jetstream) return plain;
    const routes = jetstream.cluster ? ['--cluster_name', 'c1m-brain', '--cluster', `nats://${jetstream.cluster.listen}`, '--routes', jetstream.cluster.routes.map((r) => `nats://${r}`).join(',')] : [];
    return [...plain, '-js', '-sd', jetstream.storeDir, '-n', name, ...routes];
  };
  await Promise.all(
    ports.map((_, i) =>
      supervisor
        .start({ name: count > 1 ? `nats-${i}` : 'nats', role: 'nats', nice: NATS_NICE, command: 'nats-server', args: args(i), readyWhen: (line) => line.includes('Server is ready') })
        .catch((err: NodeJS.ErrnoException) => {
          // Anything else (its port taken, a bad config) nats-server said itself: the error carries its last line.
          if (err.code === 'ENOENT') throw new Error(`${err.message}: install nats-server (Debian: apt-get install nats-server), or give --nats URL`);
          throw err;
        }),
    ),
  );
  return ports;
}

/** Each edge's port, 0 resolved to free ports now (a restarted edge must get its port back); refuses ports in use, the API's too. */
async function edgePortsOf(o: ClusterOptions, edges: number): Promise<number[]> {
  const probeHost = o.host === '0.0.0.0' ? '127.0.0.1' : o.host;
  const port = o.port || (o.portPerEdge ? 0 : await freePort(probeHost));
  let edgePorts = Array<number>(edges).fill(port);
  if (o.portPerEdge) edgePorts = port ? edgePorts.map((p, i) => p + i) : await freePorts(probeHost, edges);
  // uWS listens with SO_REUSEPORT: an edge would share a port another server holds, each answering part of the requests.
  for (const p of new Set(edgePorts)) await assertPortFree(o.host, p, "the edges' streams");
  // The routers share the API port the same way.
  if (o.router) await assertPortFree(o.apiHost, o.apiPort, 'the backend API');
  return edgePorts;
}

interface ClusterBus {
  /** The servers' URLs, comma-separated. */
  nats: string;
  /** A child's credentials file, and the CA for a TLS bus. */
  busOf: (role: BusRole, edge?: string) => ChildBus;
}

/** The bus the children use: --nats, or the nats-servers started here, each child with credentials of its own. */
async function startBus(supervisor: Supervisor, o: ClusterOptions, stateDir: string | undefined, ids: string[]): Promise<ClusterBus> {
  if (o.nats) {
    return {
      nats: o.nats,
      busOf: (role, edge) => ({
        natsCreds: o.natsCreds && statSync(o.natsCreds).isDirectory() ? credsFile(o.natsCreds, role, edge) : o.natsCreds,
        natsCa: o.natsCa,
        busInsecure: o.busInsecure,
      }),
    };
  }
  const dir = stateDir!;
  const tls = o.natsTls ? makeTlsFiles(dir, [o.natsHost, '127.0.0.1', 'localhost'].filter((h) => h !== '0.0.0.0')) : undefined;
  // --bus-insecure: a nats-server without users, as before the bus had any (to measure what they cost).
  const insecure = o.busInsecure && !tls;
  const servers = await startNatsServers(supervisor, { ...o, dir, tls, insecure, edges: ids });
  return {
    nats: servers.map((port) => `${tls ? 'tls' : 'nats'}://${o.natsHost}:${port}`).join(','),
    busOf: (role, edge) => (insecure ? { natsCreds: undefined, natsCa: undefined, busInsecure: true } : { natsCreds: credsFile(dir, role, edge), natsCa: tls?.ca, busInsecure: undefined }),
  };
}

/** Starts the routers (unless --no-router), then the edges; resolves once each said it is ready. */
async function startChildren(supervisor: Supervisor, o: ClusterOptions, ids: string[], edgePorts: number[], bus: ClusterBus) {
  // Each child tries the servers from its own first one on: a brain cluster's connections spread over its servers.
  const natsFor = (child: number) => rotate(bus.nats.split(','), child).join(',');
  /** Starts a child with its command line; its secrets go in the environment it inherits, not on a command line that `ps` shows. */
  const spawnChild = (spec: Omit<ChildSpec, 'command' | 'args'>, command: 'router' | 'edge', child: ReturnType<typeof childArgv>) => {
    Object.assign(process.env, child.env);
    return supervisor.start({ ...spec, ...cliCommand([command, ...child.argv]) });
  };
  const apiPort = o.router ? o.apiPort || (await freePort(o.apiHost)) : undefined;
  if (apiPort !== undefined) {
    await Promise.all(
      Array.from({ length: o.routers }, (_, i) =>
        spawnChild(
          { name: `router-${i}`, role: 'router', nice: ROUTER_NICE, readyWhen: (line) => line.includes('c1m router listening') || line.includes('c1m router standing by') },
          'router',
          routerChild(o, { db: routerDb(o, i), apiPort, nats: natsFor(i), ...bus.busOf('router') }),
        ),
      ),
    );
  }
  // A restarted edge of a shared port joins its siblings there; it may not find it free.
  const sharePort = ids.length > 1 && !o.portPerEdge;
  const started = await Promise.all(
    ids.map((id, i) =>
      spawnChild(
        { name: `edge-${i}`, role: 'edge', edge: id, nice: EDGE_NICE, readyWhen: (line) => line.includes('c1m edge listening') },
        'edge',
        edgeChild(o, {
          id,
          port: edgePorts[i],
          agentPort: o.agentPort && o.agentPort + i,
          presenceMs: o.presenceMs ?? busWindowMs(ids.length),
          sharePort,
          nats: natsFor(o.routers + i),
          ...bus.busOf('edge', id),
        }),
      ),
    ),
  );
  return { apiPort, started };
}

export async function runCluster(o: ClusterOptions): Promise<void> {
  const log = o.logger;
  const perEdge = o.maxConnections ?? streamCapacity();
  const edges = o.edges ?? (o.connections ? edgesFor(o.connections, perEdge) : availableParallelism());
  if (o.portPerEdge) checkPortsPerEdge(o.port, o.agentPort, edges);
  try {
    checkStreamSecret(o.streamSecret);
    if (o.nats) checkBusSecurity(o.nats, o.natsCreds, o.busInsecure);
  } catch (err) {
    throw new ClusterOptionError((err as Error).message);
  }
  const ids = Array.from({ length: edges }, (_, i) => `${o.edgeIdPrefix}${i}`);
  // The bus's secrets: written only when this command starts nats-server; a temporary directory goes at exit.
  const stateDir = o.nats ? undefined : (o.stateDir ?? mkdtempSync(join(tmpdir(), 'c1m-cluster-')));
  const removeState = () => !o.stateDir && stateDir && rmSync(stateDir, { recursive: true, force: true });
  const supervisor = new Supervisor();
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping the cluster');
    await supervisor.stop();
    removeState();
    log.info('cluster stopped');
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));

  try {
    // Only edges sharing one port hand each other the connections queued on a pausing listener.
    if (edges > 1 && !o.portPerEdge) log.info(ensureMigrateReq());
    const edgePorts = await edgePortsOf(o, edges);
    const bus = await startBus(supervisor, o, stateDir, ids);
    const { apiPort, started } = await startChildren(supervisor, o, ids, edgePorts, bus);
    log.child({}, { level: 'info' }).info(
      {
        port: edgePorts[0],
        apiPort,
        nats: bus.nats,
        natsDir: stateDir,
        edges: started.map((e) => ({ id: e.id, pid: e.pid, ...(o.portPerEdge && { port: e.port }), agentPort: e.agentPort, capacity: e.capacity })),
        pids: supervisor.pids(),
      },
      'c1m cluster ready',
    );
  } catch (err) {
    log.error({ err: (err as Error).message }, 'cluster failed to start');
    await supervisor.stop();
    removeState();
    process.exit(1);
  }
}
