/**
 * The fault run (docs/hosts.md): HAProxy in the root namespace in
 * front of two simulated edge hosts, each running `c1m cluster` of edges only
 * (a port per edge, supervised), nats-server and the router on a brain host
 * (scripts/hosts.sh), and browsers in the root namespace that know their user
 * id and reconnect when their stream ends. Then one fault after another: kill
 * -9 an edge (its supervisor restarts it), an edge host off the network and
 * back, a drain, a router restart, a nats-server restart, an edge filled to capacity.
 * For each: time to recover (every browser receives a send addressed to it
 * again), streams that ended, and whether any message reached a user it was
 * not addressed to. Each probe also goes to the users each browser follows and
 * to topics, which some browsers' streams listen to and some users subscribe
 * to (bench/topics.ts): the ledger holds every subject a browser hears. Plus delivery latency and send rate through HAProxy and
 * straight to the edges, in the same run. The bus runs as docs/security.md says to
 * run it across hosts: a user per role and edge, TLS. Needs root and `ip netns`.
 *
 * With --replicas 3, the replicated brain (issue 28): every host runs a nats-server of one JetStream cluster
 * and a router (`--replicas 3 --partitions P`), the backend moves to the next router when one does not
 * answer, and the faults are a host lost with its disk and back empty, a frozen partition leader, a host cut
 * off; sends go on throughout each, and every router must still answer every subscription after it. With
 * --stream, the hosts' JetStream cluster alone through its leader's host lost and cut off (runStreamFaults).
 *
 *   node dist/bench/faults.js [--users 400] [--faults kill,unplug,drain,router,nats,fill] [--sends 4000]
 *                               [--capacity 300] [--small-capacity 150] [--drain-rate 100]
 *                               [--replicas 3 [--partitions 2] [--faults host,freeze,cut,kill,unplug,drain,fill]]
 *                               [--stream]
 */
import { execFile as execFileCallback, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { haproxyConfig, type EdgeServer } from '../cluster/haproxy.js';
import { credsFile, makeTlsFiles, writeNatsConfig } from '../cluster/nats-auth.js';
import type { RouterStats } from '../cluster/router-process.js';
import { c1mArgv } from '../cluster/supervisor.js';
import { isAlive } from '../loadgen/server-process.js';
import { percentile } from './probe.js';
import { partitionOf } from '../subsmanager/partitions.js';
import { openStore } from '../subsmanager/store.js';
import { listensTo, subscribesTo, topicSubscriptions } from './topics.js';
import { BrainStream } from './brain-stream.js';
import { until } from './until.js';
import { setTimeout as sleep } from 'node:timers/promises';

const execFile = promisify(execFileCallback);
const HOSTS_SH = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../scripts/hosts.sh' : '../../scripts/hosts.sh', import.meta.url));

export const FAULTS = ['kill', 'unplug', 'drain', 'router', 'nats', 'fill'] as const;
/** The replicated brain's faults (issue 28), for the rig with `replicas`. */
export const BRAIN_FAULTS = ['host', 'freeze', 'cut'] as const;
export type Fault = (typeof FAULTS)[number] | (typeof BRAIN_FAULTS)[number];

/** Why the run cannot happen here, or undefined when it can. */
export function cannotRun(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  // Creating a namespace is the real test: `ip netns list` works even where adding one is not allowed.
  if (spawnSync('ip', ['netns', 'add', 'c1m-probe']).status !== 0) return 'cannot create network namespaces (`ip netns add`)';
  spawnSync('ip', ['netns', 'delete', 'c1m-probe']);
  for (const tool of ['haproxy', 'nats-server']) if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  return undefined;
}

/** scripts/hosts.sh with these arguments; what it printed. */
export function hosts(...args: string[]): string {
  const run = spawnSync(HOSTS_SH, args, { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`${HOSTS_SH} ${args.join(' ')}: ${run.error?.message ?? run.stderr}`);
  return run.stdout.trim();
}

const LOCK = join(tmpdir(), 'c1m-hosts.lock');

/**
 * Waits until this process alone owns the simulated hosts: two runs (the test suite and a run by
 * hand) would take down each other's hosts and share ports. Resolves with the release.
 */
async function lockHosts(timeoutMs = 120_000): Promise<() => void> {
  await until(
    `the run holding ${LOCK} to end`,
    () => {
      try {
        writeFileSync(LOCK, String(process.pid), { flag: 'wx' });
        return true;
      } catch {
        // A run that died without letting go leaves its pid behind.
        if (!isAlive(Number(readFileSync(LOCK, 'utf8')))) rmSync(LOCK, { force: true });
        return undefined;
      }
    },
    timeoutMs,
    200,
  );
  return () => rmSync(LOCK, { force: true });
}

/** A process of the rig, in a namespace or not; its output goes to a log file. */
class Proc {
  /** The first line of its output that matched `ready`. */
  readyLine = '';

  private constructor(
    readonly child: ChildProcess,
    /** The network namespace it runs in (a simulated host), if any. */
    readonly ns: string | undefined,
  ) {}

  /** Starts it and resolves once a line of its output matches `ready`. */
  static start(dir: string, name: string, ns: string | undefined, argv: string[], ready: RegExp | undefined, timeoutMs = 20_000): Promise<Proc> {
    // `ip netns exec` execs the command itself: the child's pid is the program's, for kill -9.
    const [command, ...args] = ns ? ['ip', 'netns', 'exec', ns, ...argv] : argv;
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(join(dir, `${name}.log`), { flags: 'a' });
    const proc = new Proc(child, ns);
    running.add(proc);
    child.once('exit', () => running.delete(proc));
    return new Promise((resolve, reject) => {
      let seen = '';
      let isReady = false;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${name} not ready within ${timeoutMs} ms: ${seen.slice(-500)}`));
      }, timeoutMs);
      const onData = (data: Buffer) => {
        log.write(data);
        if (isReady) return;
        seen += data;
        if (!ready || ready.test(seen)) {
          isReady = true;
          proc.readyLine = ready ? seen.split('\n').find((line) => ready.test(line))! : '';
          clearTimeout(timer);
          resolve(proc);
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (!isReady) reject(new Error(`${name} exited (${signal ?? code}) before it was ready: ${seen.slice(-500)}`));
      });
      if (!ready) setImmediate(() => onData(Buffer.alloc(0)));
    });
  }

  /** Resolves with the exit code once the process ends. */
  exited(): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve(this.child.exitCode);
    return new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  /** Sends `signal` and resolves when the process has exited. */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return new Promise((resolve) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return resolve();
      this.child.once('exit', () => resolve());
      this.child.kill(signal);
    });
  }
}

/** Every process the run started and that is still alive: whatever a failure leaves is killed on the way out. */
const running = new Set<Proc>();

export interface RigOptions {
  edgesPerHost: number;
  /** Streams per edge (--max-connections) on edge1; edge2's edges get `smallCapacity`, so capacities differ and weights matter. */
  capacity: number;
  smallCapacity: number;
  drainRate: number;
  bindPort: number;
  statsPort: number;
  /**
   * The replicated brain (issue 28): every host runs a nats-server of one JetStream cluster and a router
   * keeping its streams on all of them (`c1m router --replicas 3`); undefined: the brain host alone.
   */
  replicas?: number;
  /** The routers' partitions (`--partitions`), with `replicas`. */
  partitions: number;
  /**
   * No balancer (the million across hosts, bench/million-hosts.ts: HAProxy's one process could not hold its two sockets
   * a stream): each edge host's edges share this port, and HAProxy is not started. Unset: a port per edge behind HAProxy.
   */
  sharedPort?: number;
  /** More options for every router (`c1m router`) and every edge host (`c1m cluster --no-router`). */
  routerArgs?: string[];
  edgeArgs?: string[];
}

export interface ServerRow {
  status: string;
  /** The server's maxconn; streams waiting in the queue. */
  slim: number;
  qcur: number;
  scur: number;
  smax: number;
  stot: number;
  /** Connection errors, retries and redispatches: a stream HAProxy sent to an edge that refused it. */
  econ: number;
  wretr: number;
  wredis: number;
}

/** HAProxy's view of each edge (and with `backend`, of the whole backend as BACKEND), from its statistics page (CSV) on loopback. */
export async function haproxyServers(statsPort: number, backend = false): Promise<Map<string, ServerRow>> {
  const text = await (await fetch(`http://127.0.0.1:${statsPort}/haproxy;csv`)).text();
  const [head, ...rows] = text.split('\n');
  const cols = head.replace(/^# /, '').split(',');
  const at = (row: string[], name: string) => row[cols.indexOf(name)];
  const out = new Map<string, ServerRow>();
  for (const line of rows) {
    const row = line.split(',');
    if (row[0] !== 'edges' || (row[1] === 'BACKEND' && !backend)) continue;
    const n = (name: string) => Number(at(row, name) || 0);
    out.set(row[1], { status: at(row, 'status'), slim: n('slim'), qcur: n('qcur'), scur: n('scur'), smax: n('smax'), stot: n('stot'), econ: n('econ'), wretr: n('wretr'), wredis: n('wredis') });
  }
  return out;
}

/** The simulated hosts (scripts/hosts.sh). */
const HOSTS = ['brain', 'edge1', 'edge2'] as const;
export type Host = (typeof HOSTS)[number];
export const EDGE_HOSTS = ['edge1', 'edge2'] as const;
type EdgeHost = (typeof EDGE_HOSTS)[number];
const isEdgeHost = (host: Host): host is EdgeHost => (EDGE_HOSTS as readonly string[]).includes(host);
/** Edge i of a host serves streams on EDGE_PORT + i and HAProxy's agent on AGENT_PORT + i (c1m cluster --port-per-edge). */
const EDGE_PORT = 8100;
const AGENT_PORT = 9100;
/** On every brain host: clients, the JetStream cluster's routes, the router's backend API. */
const NATS_PORT = 4222;
const ROUTE_PORT = 6222;
const API_PORT = 8001;

/**
 * HAProxy, nats-server, a router and the edges, in the simulated hosts. With `replicas` (the replicated
 * brain, issue 28) every host runs a nats-server of one JetStream cluster and a router keeping its streams
 * there; without, the brain host alone runs nats-server and the router.
 */
export class Rig {
  readonly dir = mkdtempSync(join(tmpdir(), 'c1m-faults-'));
  readonly addr = Object.fromEntries(HOSTS.map((h) => [h, hosts('addr', h)])) as Record<Host, string>;
  /** The hosts that run a nats-server and a router. */
  readonly brainHosts: readonly Host[];
  /**
   * The bus as docs/hosts.md runs it: nats-server with a user per role and edge (c1m nats-config's
   * layout in natsDir), TLS with a CA made for the brain hosts' addresses (one certificate: the JetStream
   * cluster's routes check it too); every process gets its own credentials file and the CA.
   */
  readonly natsDir = join(this.dir, 'nats');
  readonly natsTls: { ca: string; cert: string; key: string };
  /** Every brain host's nats-server, comma-separated: every process gets all of them. */
  readonly natsUrl: string;
  /** The routers' backend APIs, in the order of brainHosts. */
  readonly apis: string[];
  /** The backend API crosses hosts here, so it wants a token. */
  readonly token = randomBytes(16).toString('hex');
  /** HAProxy's servers, named by edge id: what each host's `c1m cluster` runs (edge i of HOST is HOST-i on ports + i). */
  readonly edges: (EdgeServer & { ns: string })[] = [];
  /** HAProxy, the routers and nats-servers (`router`, `nats`; replicated: `router-<host>`, `nats-<host>`), and per edge host its `c1m cluster` (named after the host). */
  readonly procs = new Map<string, Proc>();
  /** The API the backend used last: it stays with it, and moves on to the next when it does not answer. */
  private apiAt = 0;

  constructor(readonly o: RigOptions) {
    if (o.replicas !== undefined && o.replicas !== HOSTS.length) throw new Error(`the replicated rig keeps every stream on its ${HOSTS.length} hosts: --replicas ${HOSTS.length}, not ${o.replicas}`);
    this.brainHosts = o.replicas ? HOSTS : ['brain'];
    this.natsTls = makeTlsFiles(this.natsDir, this.brainHosts.map((h) => this.addr[h]));
    this.natsUrl = this.brainHosts.map((h) => `tls://${this.addr[h]}:${NATS_PORT}`).join(',');
    this.apis = this.brainHosts.map((h) => `http://${this.addr[h]}:${API_PORT}`);
    for (const host of EDGE_HOSTS)
      for (let i = 0; i < o.edgesPerHost; i++)
        this.edges.push({ name: `${host}-${i}`, ns: `c1m-${host}`, host: this.addr[host], port: o.sharedPort ?? EDGE_PORT + i, agentPort: AGENT_PORT + i, capacity: this.capacityOf(host) });
  }

  private capacityOf(host: EdgeHost): number {
    return host === 'edge2' ? this.o.smallCapacity : this.o.capacity;
  }

  /** Where a host of the replicated brain keeps its data: its nats-server's JetStream store and its router's SQLite files. */
  dataDir(host: Host): string {
    return join(this.dir, 'data', host);
  }

  private procName(kind: 'nats' | 'router', host: Host): string {
    return this.o.replicas ? `${kind}-${host}` : kind;
  }

  /** A process's bus options: its credentials (for an edge host, the directory: one file per edge) and the CA. */
  private bus(creds: string): string[] {
    return ['--nats', this.natsUrl, '--nats-creds', creds, '--nats-ca', this.natsTls.ca];
  }

  async start(): Promise<void> {
    this.writeNatsConfigs();
    await Promise.all(this.brainHosts.map((host) => this.startNats(host)));
    await Promise.all(this.brainHosts.map((host) => this.startRouter(host)));
    await Promise.all(EDGE_HOSTS.map((host) => this.startEdgeHost(host)));
    if (this.o.sharedPort) return;
    const config = join(this.dir, 'haproxy.cfg');
    writeFileSync(
      config,
      haproxyConfig({ bind: { host: '127.0.0.1', port: this.o.bindPort }, stats: { host: '127.0.0.1', port: this.o.statsPort }, edges: this.edges }),
    );
    this.procs.set('haproxy', await Proc.start(this.dir, 'haproxy', undefined, ['haproxy', '-db', '-f', config], undefined));
    await this.untilStatus(this.edges.map((e) => e.name), ['UP']);
  }

  /**
   * nats-server's configuration: one server on the brain host, or (replicated) one per host, each
   * `<dir>/nats-<host>.conf`, clustered with JetStream, its store in the host's data directory.
   */
  writeNatsConfigs(): void {
    const edges = this.edges.map((e) => e.name);
    if (!this.o.replicas) return void writeNatsConfig(this.natsDir, { listen: `${this.addr.brain}:${NATS_PORT}`, edges, tls: this.natsTls });
    for (const host of HOSTS) {
      const routes = HOSTS.filter((h) => h !== host).map((h) => `${this.addr[h]}:${ROUTE_PORT}`);
      const jetstream = { name: `nats-${host}`, storeDir: join(this.dataDir(host), 'jetstream'), cluster: { listen: `${this.addr[host]}:${ROUTE_PORT}`, routes } };
      writeNatsConfig(this.natsDir, { listen: `${this.addr[host]}:${NATS_PORT}`, edges, tls: this.natsTls, jetstream });
    }
  }

  async startNats(host: Host = 'brain'): Promise<void> {
    const argv = ['nats-server', '-c', join(this.natsDir, this.o.replicas ? `nats-${host}.conf` : 'nats.conf')];
    this.procs.set(this.procName('nats', host), await Proc.start(this.dir, this.procName('nats', host), `c1m-${host}`, argv, /Server is ready/));
  }

  /** A router's SQLite store: replicated, its view of the brain's streams, in its host's data directory. */
  routerDb(host: Host): string {
    return this.o.replicas ? join(this.dataDir(host), 'router.db') : join(this.dir, 'router.db');
  }

  /** Starts a router; replicated, one that leads no partition stands by with its API closed until it leads one. */
  async startRouter(host: Host = 'brain'): Promise<void> {
    if (this.o.replicas) mkdirSync(this.dataDir(host), { recursive: true });
    const argv = c1mArgv(['router', ...this.bus(credsFile(this.natsDir, 'router')), '--db', this.routerDb(host), '--api-host', this.addr[host], '--api-port', String(API_PORT)]);
    argv.push('--token', this.token, '--stats-interval', '0', ...(this.o.routerArgs ?? []));
    if (this.o.replicas) argv.push('--replicas', String(this.o.replicas), '--partitions', String(this.o.partitions));
    const ready = this.o.replicas ? /c1m router (listening|standing by)/ : /c1m router listening/;
    this.procs.set(this.procName('router', host), await Proc.start(this.dir, this.procName('router', host), `c1m-${host}`, argv, ready, 60_000));
  }

  /**
   * An edge host: `c1m cluster` of edges only, supervised, a port each (or all on `sharedPort`); checks it runs the
   * edges HAProxy (and the bus's credentials) expect.
   */
  async startEdgeHost(host: EdgeHost): Promise<void> {
    const { sharedPort } = this.o;
    const argv = c1mArgv(['cluster', '--no-router', ...this.bus(this.natsDir), '--edges', String(this.o.edgesPerHost), '--host', this.addr[host], '--edge-id-prefix', `${host}-`]);
    argv.push(...(sharedPort ? ['--port', String(sharedPort)] : ['--port-per-edge', '--port', String(EDGE_PORT), '--agent-port', String(AGENT_PORT)]));
    argv.push('--max-connections', String(this.capacityOf(host)), '--drain-rate', String(this.o.drainRate), ...(this.o.edgeArgs ?? []));
    const proc = await Proc.start(this.dir, host, `c1m-${host}`, argv, /c1m cluster ready/, 60_000);
    this.procs.set(host, proc);
    const ready = JSON.parse(proc.readyLine) as { edges: { id: string; port?: number; agentPort?: number }[] };
    const place = (id: string, port?: number, agentPort?: number) => (sharedPort ? id : `${id} ${port} ${agentPort}`);
    const expected = this.edges.filter((e) => e.ns === `c1m-${host}`).map((e) => place(e.name, e.port, e.agentPort));
    const got = ready.edges.map((e) => place(e.id, e.port, e.agentPort));
    if (got.join() !== expected.join()) throw new Error(`${host} runs edges ${got.join(', ')}; HAProxy expects ${expected.join(', ')}`);
  }

  /**
   * The host is lost with its disk: kill -9 every process in its namespace (`ip netns pids`: nats-server,
   * router, edges and their supervisor), then delete its data directory. Its configuration and
   * credentials (what an operator provisions a host with) stay. Resolves with the pids it killed.
   */
  async killHost(host: Host): Promise<number[]> {
    const pids = netnsPids(host);
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await until(`every process of ${host} to end`, () => (netnsPids(host).length === 0 ? true : undefined), 10_000);
    await Promise.all([...this.procs.values()].filter((p) => p.ns === `c1m-${host}`).map((p) => p.exited()));
    rmSync(this.dataDir(host), { recursive: true, force: true });
    return pids;
  }

  /**
   * Starts a host's processes as the rig first did: its nats-server, its router, and on an edge host its edges.
   * A router that exits while starting (its server not yet caught up with the JetStream cluster) is started
   * again, as its supervisor would. Resolves with the router's starts.
   */
  async startHost(host: Host): Promise<number> {
    await this.startNats(host);
    let starts = 0;
    await until(`${host}'s router to start`, () => (starts++, this.startRouter(host).then(() => true)), 90_000, 500);
    if (isEdgeHost(host)) await this.startEdgeHost(host);
    return starts;
  }

  /** Whether a brain host's router has its API open (replicated, one that leads no partition stands by without). */
  apiOpen(host: Host): Promise<boolean> {
    return this.callAt(host, 'GET', '/stats', undefined, {}, 5000).then(
      (res) => res.ok,
      () => false,
    );
  }

  /** The pid of a brain host's router. */
  routerPid(host: Host): number {
    return this.procs.get(this.procName('router', host))!.child.pid!;
  }

  /** The pid of edge `name`'s current run, from the router's /stats; checked against its command line, so kill -9 hits that edge only. */
  async edgePid(name: string): Promise<number> {
    const pid = (await this.routerStats()).edges.find((e) => e.id === name && e.state !== 'down')?.pid;
    const cmdline = pid ? readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0') : [];
    if (!pid || cmdline[cmdline.indexOf('--id') + 1] !== name) throw new Error(`the router's pid for ${name} (${pid}) is not that edge`);
    return pid;
  }

  /** HAProxy's view of each edge (and with `backend`, of the whole backend as BACKEND). */
  haproxy(backend = false): Promise<Map<string, ServerRow>> {
    return haproxyServers(this.o.statsPort, backend);
  }

  /** Resolves with the time when HAProxy shows every one of `names` in one of `statuses` (UP, DOWN, DRAIN, MAINT). */
  untilStatus(names: string[], statuses: string[], timeoutMs = 20_000): Promise<number> {
    return until(
      `HAProxy to show ${names.join(', ')} ${statuses.join(' or ')}`,
      async () => {
        const rows = await this.haproxy();
        return names.every((n) => statuses.some((s) => rows.get(n)?.status.startsWith(s))) ? Date.now() : undefined;
      },
      timeoutMs,
    );
  }

  /**
   * A backend API call, to the router that answered last. A router that does not answer within a second, or
   * answers 503 (not serving), counts as down: later calls go to the next one. The call itself goes there too when
   * it is a GET, or when the router could not be reached at all (its API closed, its host gone); a send that may
   * have reached a router is not repeated, as that router may have taken it without answering in time.
   */
  async call(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Response> {
    for (let tried = 1; ; tried++) {
      const at = this.apiAt;
      const last = tried >= this.apis.length;
      try {
        const res = await this.callAt(this.brainHosts[at], method, path, body, headers);
        if (res.status !== 503) return res;
        this.failedOver(at);
        if (last || method !== 'GET') return res;
        await res.arrayBuffer();
      } catch (err) {
        this.failedOver(at);
        const unreached = ['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH'].includes((err as { cause?: { code?: string } }).cause?.code ?? '');
        if (last || (method !== 'GET' && !unreached)) throw err;
      }
    }
  }

  /** The router at `at` did not serve: on to the next (once for calls in flight together, not once each). */
  private failedOver(at: number): void {
    if (this.apiAt === at) this.apiAt = (at + 1) % this.apis.length;
  }

  /** A backend API call to one host's router. */
  callAt(host: Host, method: string, path: string, body?: string, headers: Record<string, string> = {}, timeoutMs = 1000): Promise<Response> {
    const api = this.apis[this.brainHosts.indexOf(host)];
    return fetch(`${api}${path}`, { method, body, headers: { ...headers, authorization: `Bearer ${this.token}` }, signal: AbortSignal.timeout(timeoutMs) });
  }

  async routerStats(host?: Host): Promise<RouterStats> {
    return (await (host ? this.callAt(host, 'GET', '/stats') : this.call('GET', '/stats'))).json() as never;
  }

  /** The partitions `host`'s router says it leads (/stats); undefined when it does not answer. */
  async leading(host: Host): Promise<number[] | undefined> {
    const stats = await this.routerStats(host).catch(() => undefined);
    return stats?.partitions?.filter((p) => p.leading).map((p) => p.partition);
  }

  /** The brain host whose router leads `partition`, asking each but `except`; undefined while none says so. */
  async leaderOf(partition: number, except?: Host): Promise<Host | undefined> {
    for (const host of this.brainHosts) if (host !== except && (await this.leading(host))?.includes(partition)) return host;
    return undefined;
  }

  /**
   * Resolves with the time when the router lists none of `edges` as up in the run that was cut off
   * (`pid`, when given): their users left its directory, dropped or replaced by a restarted run's.
   */
  untilGone(edges: string[], pid?: number): Promise<number> {
    return until(`the router to drop ${edges.join(', ')}`, async () => {
      const listed = (await this.routerStats()).edges;
      return edges.every((id) => !listed.some((e) => e.id === id && e.state !== 'down' && (pid === undefined || e.pid === pid))) ? Date.now() : undefined;
    });
  }

  /** `c1m admin drain|undrain` from the brain host, as an operator would. */
  async admin(verb: 'drain' | 'undrain', edge: string): Promise<void> {
    const argv = c1mArgv(['admin', verb, edge, ...this.bus(credsFile(this.natsDir, 'admin'))]);
    const code = await (await Proc.start(this.dir, `admin-${verb}-${edge}`, 'c1m-brain', argv, undefined)).exited();
    if (code !== 0) throw new Error(`c1m admin ${verb} ${edge} exited with ${code} (see ${this.dir})`);
  }

  async stop(): Promise<void> {
    // The edge hosts' supervisors close their edges' streams at once (SIGINT) rather than draining; then the rest.
    await Promise.all(EDGE_HOSTS.map((host) => this.procs.get(host)?.stop()));
    await Promise.all([...this.procs].filter(([name]) => !name.startsWith('nats')).map(([, proc]) => proc.stop()));
    await Promise.all([...this.procs].filter(([name]) => name.startsWith('nats')).map(([, proc]) => proc.stop()));
  }
}

/** The pids of every process in a simulated host's namespace. */
function netnsPids(host: Host): number[] {
  const run = spawnSync('ip', ['netns', 'pids', `c1m-${host}`], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`ip netns pids c1m-${host}: ${run.error?.message ?? run.stderr}`);
  return run.stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** Who may receive what `from` sends: `from` and its subscribers. */
const subscribersOf = new Map<number, Set<number>>();
/** The subjects each user subscribes to, as the run made them: what every router must still answer after a fault. */
const subscriptionsOf = new Map<number, string[]>();
/** The routers' partitions: a message's id is its partition's component of the stream's token. */
let partitions = 1;
/** The probe each id (`<partition> <id>`) carried, over every browser: an id given to two probes (a split brain) counts in `renumbered`. */
const numbered = new Map<string, string>();
let renumbered = 0;
/** Topics of the run: the browsers of users 1..users listen to and subscribe to them as bench/topics.ts says. */
const TOPICS = 5;

export interface Tally {
  /** Streams that ended (edge gone, drained, network). */
  ends: number;
  /** Answers other than 200 (503 server full, 404). */
  refused: number;
  /** Messages that reached a user they were not addressed to. Must stay 0. */
  misdelivered: number;
  /** Attempts that ended before their welcome (the connection was closed or reset). */
  failed: number;
  /** Resumed streams told their history is lost (must stay 0 within the history's window). */
  lost: number;
}

/**
 * A browser holding GET /test/<id> with message ids, and listening to a topic
 * if it has one; it reconnects 100-200 ms after its stream ends, like a comet
 * page, resuming from the last id it saw. Its ledger counts every probe to a
 * subject it hears (its user, the user it follows, its topics) that the router
 * acknowledged and every one it received, so a fault's missed, doubled and
 * reordered messages show.
 */
export class Browser {
  open = false;
  /** The last message id it saw, to resume from. */
  private lastId?: string;
  /** Probes (`<subject> <seq>`) to subjects it hears that the router acknowledged, and how many times each arrived. */
  readonly acked = new Set<string>();
  readonly received = new Map<string, number>();
  /** Acknowledged probes of the latest round not received yet. */
  readonly waiting = new Set<string>();
  /** Messages that arrived with an id below one before from their partition (a copy counts as duplicated only). */
  outOfOrder = 0;
  private readonly lastSeenIds: number[] = [];
  /** The topic its stream listens to, and the one its user subscribes to. */
  private readonly listening?: string;
  private readonly subscribed?: string;
  /** Longest time without a stream, ms, since `resetGap()`. */
  maxGap = 0;
  /** Longest replay since `resetGap()`: from a welcome after a gap until every probe acknowledged before it and not yet received had arrived, ms. */
  maxReplay = 0;
  /** Probes the stream that came back still owes, and when it was welcomed. */
  private owed = new Set<string>();
  private backAt = 0;
  /** When the last welcome arrived. */
  welcomedAt = 0;
  readonly tally: Tally = { ends: 0, refused: 0, misdelivered: 0, failed: 0, lost: 0 };
  private downSince = 0;
  private req?: http.ClientRequest;
  private stopped = false;

  constructor(
    readonly id: number,
    private readonly host: string,
    private readonly port: number,
    private readonly onLatency?: (ms: number) => void,
    /** Topics of the run (0: it hears none). */
    topics = 0,
  ) {
    this.listening = listensTo(id, topics);
    this.subscribed = subscribesTo(id, topics);
    this.connect();
  }

  /** Does a message to `subject` (as written in a path: `5`, `room:1`) reach this browser? */
  hears(subject: string): boolean {
    if (subject === this.listening || subject === this.subscribed) return true;
    const user = Number(subject);
    return user === this.id || (subscribersOf.get(user)?.has(this.id) ?? false);
  }

  /** The router acknowledged probe `key` (`<subject> <seq>`) to a subject this browser hears. */
  ack(key: string): void {
    this.acked.add(key);
    if (!this.received.has(key)) this.waiting.add(key);
  }

  private connect(): void {
    if (this.stopped) return;
    let ended = false;
    let answered = false;
    const end = () => {
      if (ended) return;
      ended = true;
      if (this.open) {
        this.tally.ends++;
        this.downSince = Date.now();
      } else if (!answered && !this.stopped) this.tally.failed++;
      this.open = false;
      if (!this.stopped) setTimeout(() => this.connect(), 100 + Math.random() * 100);
    };
    let buffered = '';
    const path = `/test/${this.id}${this.lastId === undefined ? '?ids=1' : `?lastEventId=${this.lastId}`}${this.listening ? `&topics=${this.listening}` : ''}`;
    this.req = http.get({ host: this.host, port: this.port, path, agent: false }, (res) => {
      answered = true;
      if (res.statusCode !== 200) this.tally.refused++;
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        const lines = (buffered + text).split('\n');
        buffered = lines.pop()!;
        for (const line of lines) this.line(line);
      });
      res.on('end', end).on('error', end).on('close', end);
    });
    this.req.on('error', end);
  }

  private line(line: string): void {
    if (line.startsWith('Welcome')) {
      if (this.downSince) {
        this.maxGap = Math.max(this.maxGap, Date.now() - this.downSince);
        this.owed = new Set([...this.acked].filter((seq) => !this.received.has(seq)));
        this.backAt = Date.now();
      }
      this.downSince = 0;
      this.welcomedAt = Date.now();
      this.open = true;
      return;
    }
    if (line === '' || line.startsWith(' ')) return; // a heartbeat, or a line of a multi-line message (see NumberedStream)
    const [id, tag, subject, seq, sentAt] = line.split(' ');
    if (id === 'lost') return void this.tally.lost++;
    this.lastId = id;
    if (tag !== 'm') return;
    if (!this.hears(subject)) return void this.tally.misdelivered++;
    const key = `${subject} ${seq}`;
    const copies = (this.received.get(key) ?? 0) + 1;
    this.received.set(key, copies);
    // With partitions the id is a token, one component per partition: the message's own is its partition's.
    const partition = partitionOf(subject, partitions);
    const own = Number(id.split('-')[partition]);
    const carried = numbered.get(`${partition} ${own}`);
    if (carried === undefined) numbered.set(`${partition} ${own}`, key);
    else if (carried !== key) renumbered++;
    if (copies === 1 && own < (this.lastSeenIds[partition] ?? 0)) this.outOfOrder++;
    this.lastSeenIds[partition] = Math.max(this.lastSeenIds[partition] ?? 0, own);
    this.waiting.delete(key);
    if (this.owed.delete(key) && this.owed.size === 0) this.maxReplay = Math.max(this.maxReplay, Date.now() - this.backAt);
    if (subject === String(this.id)) this.onLatency?.(Date.now() - Number(sentAt));
  }

  /** The first acknowledged probe not received yet, and the id the stream last saw: where a loss starts. */
  firstOwed(): { probe?: string; lastId?: string } {
    for (const s of this.acked) if (!this.received.has(s)) return { probe: s, lastId: this.lastId };
    return { lastId: this.lastId };
  }

  /** Acknowledged probes not received yet. */
  owes(): number {
    let owed = 0;
    for (const s of this.acked) if (!this.received.has(s)) owed++;
    return owed;
  }

  /** Acknowledged probes that never arrived, those that arrived more than once, and those out of order; the ledger starts again. */
  settle(): { missed: number; duplicated: number; outOfOrder: number } {
    let [missed, duplicated] = [0, 0];
    for (const s of this.acked) {
      const n = this.received.get(s) ?? 0;
      if (n === 0) missed++;
      if (n > 1) duplicated++;
    }
    const outOfOrder = this.outOfOrder;
    this.acked.clear();
    this.received.clear();
    this.outOfOrder = 0;
    return { missed, duplicated, outOfOrder };
  }

  resetGap(): void {
    this.maxGap = 0;
    this.maxReplay = 0;
  }

  close(): void {
    this.stopped = true;
    this.req?.destroy();
  }
}

/** Runs `task` over `items`, `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) await task(items[next++]);
  }));
}

let seq = 0;
/** Keyed sends answered `duplicate`: an earlier try of theirs was kept, its answer lost or refused. */
let keptUnanswered = 0;

/** The longest time between two acknowledgements (of sends, or of a stream's messages), the wait for the next one included. */
class AckGap {
  private longest = 0;
  private last = Date.now();

  note(): void {
    this.longest = this.maxGapMs;
    this.last = Date.now();
  }

  get maxGapMs(): number {
    return Math.max(this.longest, Date.now() - this.last);
  }

  /** Starts anew: what counts is the longest while a fault lasts. */
  reset(): void {
    this.longest = 0;
    this.last = Date.now();
  }
}

/** Between acknowledged sends of the run, per partition. */
const sendGaps = new Map<number, AckGap>();

/** The longest wait between acknowledged sends of one partition since `resetSendGaps` (each partition has its own leader to lose). */
const maxSendGapMs = (): number => Math.max(...[...sendGaps.values()].map((gap) => gap.maxGapMs));

function resetSendGaps(): void {
  sendGaps.clear();
  for (let partition = 0; partition < partitions; partition++) sendGaps.set(partition, new AckGap());
}

/**
 * POST /send/<subject> with a message naming its subject, seq and send time (to `host`'s router, or the backend's
 * choice); false when the router did not take it. A send is never repeated: one whose answer did not come may still
 * have been taken, and a repeat would reach its users twice.
 */
async function send(rig: Rig, subject: number | string, s: number, host?: Host, key?: string): Promise<boolean> {
  try {
    const body = `m ${subject} ${s} ${Date.now()}`;
    const headers: Record<string, string> = key ? { 'idempotency-key': key } : {};
    const res = await (host ? rig.callAt(host, 'POST', `/send/${subject}`, body, headers) : rig.call('POST', `/send/${subject}`, body, headers));
    const text = await res.text();
    if (res.ok) sendGaps.get(partitionOf(String(subject), partitions))?.note();
    if (res.ok && key && (JSON.parse(text) as { duplicate?: boolean }).duplicate) keptUnanswered++;
    return res.ok;
  } catch {
    return false;
  }
}

/** Probe `s` to `subject`; once acknowledged, every browser that hears it expects it. */
async function sendProbe(rig: Rig, browsers: Browser[], subject: string, s = ++seq, host?: Host, key?: string): Promise<boolean> {
  const taken = await send(rig, subject, s, host, key);
  if (taken) for (const b of browsers) if (b.hears(subject)) b.ack(`${subject} ${s}`);
  return taken;
}

/** Runs `step` again and again, `pauseMs` apart, until stopped (and for `limitMs` at most, whatever happens). */
class Repeat {
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(step: () => Promise<unknown>, pauseMs: number, limitMs: number) {
    const limit = Date.now() + limitMs;
    this.done = (async () => {
      while (!this.stopped && Date.now() < limit) {
        await step();
        await sleep(pauseMs);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

/** Probes not acknowledged that are tried again at once, at most, and for how long each (ms). */
const RETRYING_AT_MOST = 16;
const RETRY_FOR_MS = 15_000;

/**
 * Probes to the users in turn, one after another, while a fault lasts: the longest wait for an acknowledgement
 * shows. Each carries an Idempotency-Key, and one not acknowledged (refused, or unanswered: it may have been
 * kept all the same) is tried again with it in the background, as a backend would: acknowledged at last, it enters
 * the ledger, which then wants it exactly once, the try that was kept but not answered included.
 */
class Ticker {
  /** Probes acknowledged only on a retry, and of those the ones the router said it already had (`duplicate`). */
  retriedAcks = 0;
  private readonly keptBefore = keptUnanswered;
  get keptUnanswered(): number {
    return keptUnanswered - this.keptBefore;
  }
  private readonly retrying = new Set<Promise<void>>();
  private readonly repeat: Repeat;

  constructor(
    private readonly rig: Rig,
    private readonly browsers: Browser[],
  ) {
    let i = 0;
    this.repeat = new Repeat(async () => {
      const subject = String(browsers[i++ % browsers.length].id);
      const s = ++seq;
      if ((await sendProbe(rig, browsers, subject, s, undefined, `probe-${s}`)) || this.retrying.size >= RETRYING_AT_MOST) return;
      const retry = this.retry(subject, s).finally(() => this.retrying.delete(retry));
      this.retrying.add(retry);
    }, 20, 180_000);
  }

  private async retry(subject: string, s: number): Promise<void> {
    for (const deadline = Date.now() + RETRY_FOR_MS; Date.now() < deadline; ) {
      await sleep(250);
      if (await sendProbe(this.rig, this.browsers, subject, s, undefined, `probe-${s}`)) return void this.retriedAcks++;
    }
  }

  async stop(): Promise<void> {
    await this.repeat.stop();
    await Promise.all(this.retrying);
  }
}

/** One send to every browser's user and to every topic; resolves with the browsers that did not receive all they hear of it within `waitMs`. */
async function probe(rig: Rig, browsers: Browser[], waitMs = 250): Promise<Browser[]> {
  const s = ++seq;
  for (const b of browsers) b.waiting.clear();
  const subjects = [...browsers.map((b) => String(b.id)), ...Array.from({ length: TOPICS }, (_, i) => `room:${i + 1}`)];
  await pool(subjects, 16, async (subject) => void (await sendProbe(rig, browsers, subject, s)));
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline && browsers.some((b) => b.waiting.size > 0)) await sleep(10);
  return browsers.filter((b) => b.waiting.size > 0);
}

/** Probes until one round reaches everyone; the time that took from `since`, ms. */
async function recovery(rig: Rig, browsers: Browser[], since: number, timeoutMs = 60_000): Promise<number> {
  for (;;) {
    const missing = await probe(rig, browsers);
    if (missing.length === 0) return Date.now() - since;
    if (Date.now() - since > timeoutMs) throw new Error(`${missing.length} users still unreachable ${timeoutMs} ms after the fault (e.g. ${missing[0].id})`);
  }
}

/** Stops one of the brain host's processes and starts it again; how long that took, and until every user was reachable again. */
async function restart(rig: Rig, browsers: Browser[], name: 'router' | 'nats', start: () => Promise<void>) {
  const t0 = Date.now();
  await rig.procs.get(name)!.stop();
  await start();
  const restartedMs = Date.now() - t0;
  return { restartedMs, recoveryMs: await recovery(rig, browsers, t0) };
}

/**
 * Per router (brain host), the subscriptions the run made that it does not hold: every router keeps the whole
 * store as its view, and must still hold it after every fault. Asked of its API (GET /subscriptions/<user>); a
 * router standing by has none open, and its view (its SQLite file) is read as `c1m subs get` would.
 */
async function subscriptionsLost(rig: Rig): Promise<Record<string, number>> {
  const lost: Record<string, number> = {};
  for (const host of rig.brainHosts) {
    const view = (await rig.apiOpen(host)) ? undefined : openStore(rig.routerDb(host), { readonly: true });
    const held = async (user: number): Promise<unknown[]> => {
      if (view) return view.getSubscriptions(user);
      const res = await rig.callAt(host, 'GET', `/subscriptions/${user}`, undefined, {}, 5000);
      if (!res.ok) throw new Error(`${host}'s router: GET /subscriptions/${user}: ${res.status} ${await res.text()}`);
      return (await res.json()) as unknown[];
    };
    lost[host] = 0;
    try {
      await pool([...subscriptionsOf], 8, async ([user, subjects]) => {
        const has = new Set((await held(user)).map(String));
        lost[host] += subjects.filter((subject) => !has.has(subject)).length;
      });
    } finally {
      view?.close();
    }
  }
  return lost;
}

/** When the last browser that lost its stream got it back. */
function lastWelcome(browsers: Browser[]): number {
  return Math.max(...browsers.filter((b) => b.maxGap > 0).map((b) => b.welcomedAt));
}

function sum(browsers: Browser[]): Tally {
  const t: Tally = { ends: 0, refused: 0, misdelivered: 0, failed: 0, lost: 0 };
  for (const b of browsers) for (const k of Object.keys(t) as (keyof Tally)[]) t[k] += b.tally[k];
  return t;
}

function delta(after: Tally, before: Tally): Tally {
  return { ends: after.ends - before.ends, refused: after.refused - before.refused, misdelivered: after.misdelivered - before.misdelivered, failed: after.failed - before.failed, lost: after.lost - before.lost };
}

export interface FaultResult extends Tally {
  fault: Fault;
  /** From the fault to every user receiving a send again, ms. */
  recoveryMs: number;
  /** Longest time one user was without a stream, ms. */
  maxGapMs: number;
  /** Longest replay: from a user's welcome after its gap until every probe it was owed had arrived, ms. */
  maxReplayMs: number;
  /** Probes the router acknowledged during the fault and its recovery that never reached a browser that hears their subject, those that reached one twice, and those that came after one with a higher id. */
  missed: number;
  duplicated: number;
  outOfOrder: number;
  /** Ids that reached browsers with two different probes: one partition numbered by two routers at once. */
  renumbered: number;
  [detail: string]: unknown;
}

export interface RunOptions {
  users: number;
  faults: readonly Fault[];
  /** Sends per path (HAProxy, direct) for the latency comparison; 0 skips it. */
  sends: number;
  rig?: Partial<RigOptions>;
  log?: (line: string) => void;
}

const BRAIN_STREAM_JS = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../dist/bench/brain-stream.js' : './brain-stream.js', import.meta.url));

export interface StreamFaultOptions {
  /** The host lost with its disk and brought back empty, if any. */
  host?: Host;
  /** The host whose cable is pulled, if any. */
  cut?: Host;
  /** How long the lost host stays away, and how long the cable stays out, ms. */
  absentMs?: number;
  cutMs?: number;
  log?: (line: string) => void;
}

/**
 * The hosts' JetStream cluster alone (the replicated rig's nats-servers: no routers, edges or HAProxy). A
 * router's credentials keep writing an R3 stream (BrainStream) while (1) `host`, made the stream's leader, is
 * lost with its disk (kill -9 of everything in its namespace, its data directory deleted) and brought back
 * empty: its server must catch up by itself and then, made the leader, hold every message; (2) `cut`, made the
 * leader, has its cable pulled: the majority goes on taking writes, a writer inside the cut host gets none
 * taken, and after the plug the cut server catches up. Each fault hits the leader on purpose: the worst case,
 * where the stream waits for an election. Each fault's stream is checked as the majority's leader holds it and
 * as the server that came back holds it.
 */
export function runStreamFaults(o: StreamFaultOptions) {
  return onHosts(() => streamFaults(o));
}

async function streamFaults(o: StreamFaultOptions) {
  const log = o.log ?? ((line: string) => console.log(line));
  const rig = new Rig({ edgesPerHost: 1, capacity: 1, smallCapacity: 1, drainRate: 1, bindPort: 0, statsPort: 0, replicas: HOSTS.length, partitions: 1 });
  let stream: BrainStream | undefined;
  let publisher: Repeat | undefined;
  try {
    rig.writeNatsConfigs();
    await Promise.all(HOSTS.map((host) => rig.startNats(host)));
    stream = await BrainStream.connect(rig.natsUrl, credsFile(rig.natsDir, 'router'), rig.natsTls.ca);
    await stream.create(HOSTS.length);
    // One message after another throughout, timing the longest wait for an acknowledgement.
    const gap = new AckGap();
    publisher = new Repeat(async () => (await stream!.publishNext()) && gap.note(), 10, 180_000);
    await until('100 messages in the stream', () => (stream!.acked >= 100 ? true : undefined), 30_000);
    const faults = { stream, gap, log };
    const host = o.host && (await streamFault(faults, 'host', o.host, () => streamHostLoss(rig, o.host!, o.absentMs ?? 3000)));
    const cut = o.cut && (await streamFault(faults, 'cut', o.cut, () => streamCut(rig, o.cut!, o.cutMs ?? 10_000)));
    return { host, cut, dir: rig.dir };
  } finally {
    await publisher?.stop();
    await stream?.close().catch(() => undefined);
    await rig.stop();
  }
}

/**
 * One fault of the stream's leader: makes `host`'s server the leader, runs `fault` (resolves once the host's
 * server is back), waits until that server's copy is current, and checks the stream as the leader holds it and
 * again once the returned server leads.
 */
async function streamFault(
  { stream, gap, log }: { stream: BrainStream; gap: AckGap; log: (line: string) => void },
  name: 'host' | 'cut',
  host: Host,
  fault: () => Promise<Record<string, unknown>>,
) {
  const server = `nats-${host}`;
  await stream.lead(server);
  gap.reset();
  const ackedBefore = stream.acked;
  const t0 = Date.now();
  const details = await fault();
  const ackedDuring = stream.acked - ackedBefore;
  const t1 = Date.now();
  const catchUpMs =
    (await until(`${server} to catch up`, async () => {
      const copy = await stream.replica(server).catch(() => undefined);
      return copy?.current && copy.lag === 0 ? Date.now() : undefined;
    }, 60_000, 100)) - t1;
  const result = {
    fault: name,
    host,
    ...details,
    faultMs: t1 - t0,
    ackedBefore,
    ackedDuring,
    maxGapMs: gap.maxGapMs,
    catchUpMs,
    leader: await stream.leader(),
    ...(await stream.check()),
    stepDowns: await stream.lead(server),
    returned: await stream.check(),
    acked: stream.acked,
  };
  log(JSON.stringify(result));
  return result;
}

/** The host lost with its disk (Rig.killHost), away for `absentMs`, then its nats-server started again, empty. */
async function streamHostLoss(rig: Rig, host: Host, absentMs: number) {
  const killed = await rig.killHost(host);
  const deleted = !existsSync(rig.dataDir(host));
  await sleep(absentMs);
  await rig.startNats(host);
  return { killed: killed.length, deleted };
}

/** The host's cable out for `cutMs`; meanwhile a writer inside it tries its own server. */
async function streamCut(rig: Rig, host: Host, cutMs: number) {
  const t0 = Date.now();
  hosts('unplug', host);
  const minority = await minorityWrites(rig, host, 3);
  await sleep(Math.max(0, cutMs - (Date.now() - t0)));
  hosts('plug', host);
  return { minorityAttempts: minority.attempts, minorityTaken: minority.taken };
}

/** `attempts` publishes from inside `host` to its own nats-server alone, as its router would make them cut off; how many the stream took. */
async function minorityWrites(rig: Rig, host: Host, attempts: number): Promise<{ attempts: number; taken: number }> {
  const argv = [process.execPath, BRAIN_STREAM_JS, `tls://${rig.addr[host]}:4222`, credsFile(rig.natsDir, 'router'), rig.natsTls.ca, String(attempts)];
  const proc = await Proc.start(rig.dir, `minority-${host}`, `c1m-${host}`, argv, /"taken"/, 60_000);
  await proc.exited();
  return JSON.parse(proc.readyLine) as { attempts: number; taken: number };
}

/** The faults a rig can have: the single brain's, or the replicated brain's (whose routers and nats-servers are on every host). */
function faultsFor(replicated: boolean): Fault[] {
  return replicated ? [...FAULTS.filter((f) => f !== 'router' && f !== 'nats'), ...BRAIN_FAULTS] : [...FAULTS];
}

/** Starts the rig, runs the faults in order, stops everything; resolves with one result per fault and the comparison. */
export async function runFaults(o: RunOptions) {
  const possible = faultsFor(o.rig?.replicas !== undefined);
  const unknown = o.faults.filter((f) => !possible.includes(f));
  if (unknown.length) throw new Error(`no fault ${unknown.join(', ')} on this rig (${possible.join(', ')})`);
  return onHosts(() => runOnHosts(o));
}

/**
 * Runs `work` on the simulated hosts, made from nothing (a run that was killed may have left its hosts, and processes
 * in them, behind) and owned by this process alone; then ends every process of the rig and takes the hosts down.
 */
export async function onHosts<T>(work: () => Promise<T>): Promise<T> {
  const unlock = await lockHosts();
  try {
    hosts('down');
    hosts('up');
    return await work();
  } finally {
    for (const proc of running) proc.child.kill('SIGKILL');
    hosts('down');
    unlock();
  }
}

async function runOnHosts(o: RunOptions) {
  const log = o.log ?? ((line: string) => console.log(line));
  const rig = new Rig({ edgesPerHost: 2, capacity: 300, smallCapacity: 150, drainRate: 100, bindPort: 18000, statsPort: 18404, partitions: 2, ...o.rig });
  const browsers: Browser[] = [];
  const extra: Browser[] = [];
  try {
    await rig.start();
    log(JSON.stringify({ msg: 'rig up', dir: rig.dir, edges: rig.edges.map((e) => `${e.name} ${e.host}:${e.port} agent ${e.agentPort} capacity ${e.capacity}`) }));
    await subscribeUsers(rig, o.users);

    const latency = new LatencyByPath();
    for (let id = 1; id <= o.users; id++) browsers.push(new Browser(id, '127.0.0.1', rig.o.bindPort, latency.on, TOPICS));
    await until('every browser to hold a stream', () => (browsers.every((b) => b.open) ? true : undefined));
    await recovery(rig, browsers, Date.now());
    log(JSON.stringify({ msg: 'browsers connected through HAProxy', users: o.users, ...sum(browsers), perEdge: Object.fromEntries([...(await rig.haproxy())].map(([n, r]) => [n, r.scur])) }));
    const comparison = o.sends > 0 ? await compareLatency(rig, o, browsers, extra, latency, log) : [];

    const results: FaultResult[] = [];
    for (const fault of o.faults) results.push(await runFault(rig, fault, browsers, extra, log));
    return { results, comparison, dir: rig.dir };
  } finally {
    for (const b of [...browsers, ...extra]) b.close();
    await rig.stop();
  }
}

/** The run's graph: each user hears the next one (a send reaches two users, so a wrong fan-out would show), and the topics. */
async function subscribeUsers(rig: Rig, users: number): Promise<void> {
  const pairs = Array.from({ length: users - 1 }, (_, i) => [i + 1, i + 2]);
  for (const [subscriber, subscribee] of pairs) subscribersOf.set(subscribee, new Set([subscriber]));
  const subscriptions = [...pairs, ...topicSubscriptions(users, TOPICS)];
  subscriptionsOf.clear();
  for (const [user, subject] of subscriptions) subscriptionsOf.set(user, [...(subscriptionsOf.get(user) ?? []), String(subject)]);
  const added = await rig.call('POST', '/subscriptions', JSON.stringify(subscriptions));
  if (!added.ok) throw new Error(`POST /subscriptions: ${added.status} ${await added.text()}`);
  partitions = rig.o.replicas ? rig.o.partitions : 1;
  numbered.clear();
  renumbered = 0;
  // Replicated, one router took them: every router must answer them before the run counts on them.
  if (rig.o.replicas) await until('every router to answer the subscriptions', async () => (Object.values(await subscriptionsLost(rig)).every((n) => n === 0) ? true : undefined), 30_000, 200);
}

/** The delivery latencies the browsers see, by the path their sends took; recorded only while a path is set. */
class LatencyByPath {
  readonly haproxy: number[] = [];
  readonly direct: number[] = [];
  /** Set only while the comparison runs: probes before and after it are not part of it. */
  path: 'haproxy' | 'direct' | undefined;
  readonly on = (ms: number) => this.path && this[this.path].push(ms);
}

/**
 * Delivery latency through HAProxy against straight to the edges: as many users again, straight to the edges, beside
 * the HAProxy ones, spread in proportion to each edge's room (HAProxy's limit for it less its streams), so that no
 * edge fills and turns them away.
 */
async function compareLatency(rig: Rig, o: RunOptions, browsers: Browser[], extra: Browser[], latency: LatencyByPath, log: (line: string) => void): Promise<Record<string, unknown>[]> {
  const comparison: Record<string, unknown>[] = [];
  const rows = await rig.haproxy();
  const room = rig.edges.map((e) => rows.get(e.name)!.slim - rows.get(e.name)!.scur);
  const total = room.reduce((a, b) => a + b, 0);
  if (total < o.users) throw new Error(`the edges have room for ${total} more streams, not ${o.users} direct browsers`);
  const edgeFor = (i: number) => {
    let at = ((i + 0.5) * total) / o.users;
    return rig.edges.find((_, k) => (at -= room[k]) < 0)!;
  };
  const direct = Array.from({ length: o.users }, (_, i) => new Browser(100_000 + i, edgeFor(i).host, edgeFor(i).port, latency.on));
  extra.push(...direct);
  await until('every direct browser to hold a stream', () => (direct.every((b) => b.open) ? true : undefined));
  const seconds = { haproxy: 0, direct: 0 };
  const sent = { haproxy: 0, direct: 0 };
  // A warm-up pair first, then the two paths in turn twice, so neither gains from going second.
  const phases = [['haproxy', browsers, true], ['direct', direct, true], ['direct', direct], ['haproxy', browsers], ['haproxy', browsers], ['direct', direct]] as const;
  for (const [name, group, warmUp] of phases) {
    latency.path = name;
    const count = Math.ceil(o.sends / (warmUp ? 4 : 2));
    const had = latency[name].length;
    const s = ++seq;
    const t0 = performance.now();
    await pool(Array.from({ length: count }, (_, i) => group[i % group.length].id), 16, (id) => send(rig, id, s).then(() => undefined));
    await until(`${name} deliveries`, () => (latency[name].length >= had + count ? true : undefined), 10_000).catch(() => undefined);
    if (warmUp) latency[name].length = had;
    else {
      seconds[name] += (performance.now() - t0) / 1000;
      sent[name] += count;
    }
  }
  latency.path = undefined;
  for (const name of ['haproxy', 'direct'] as const) {
    const sorted = latency[name].sort((a, b) => a - b);
    comparison.push({ path: name, sends: sent[name], delivered: sorted.length, sendsPerSecond: Math.round(sent[name] / seconds[name]), p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), maxMs: sorted.at(-1) });
    log(JSON.stringify({ msg: 'latency', ...comparison.at(-1) }));
  }
  for (const b of direct) b.close();
  return comparison;
}

/** One fault, its recovery and its ledger; leaves the cluster whole again for the next. */
async function runFault(rig: Rig, fault: Fault, browsers: Browser[], extra: Browser[], log: (line: string) => void): Promise<FaultResult> {
  for (const b of browsers) {
    b.resetGap();
    b.settle(); // the ledger covers this fault and its recovery only
  }
  const before = sum(browsers);
  const renumberedBefore = renumbered;
  // Replicated, sends go on throughout the fault: the longest wait for an acknowledged one is reported.
  const sending = rig.o.replicas ? new Ticker(rig, browsers) : undefined;
  resetSendGaps();
  const result = await FAULT_RUNS[fault](rig, browsers, extra);
  const sendGapMs = maxSendGapMs();
  await sending?.stop();
  // Sends acknowledged just before the fault's end may still be on their way, and a stream still resuming on a
  // loaded box brings its share late: a probe counts as missed only if it has not come by this deadline.
  await until('the acknowledged probes to arrive', () => (browsers.every((b) => b.owes() === 0) ? true : undefined), SETTLE_MS, 50).catch(() => {
    const owing = browsers.filter((b) => b.owes() > 0);
    log(JSON.stringify({ msg: 'probes still owed', fault, browsers: owing.length, closed: owing.filter((b) => !b.open).length, owed: owing.slice(0, 5).map((b) => ({ id: b.id, open: b.open, owes: b.owes(), first: b.firstOwed() })) }));
  });
  const ledger = browsers.map((b) => b.settle()).reduce((t, l) => ({ missed: t.missed + l.missed, duplicated: t.duplicated + l.duplicated, outOfOrder: t.outOfOrder + l.outOfOrder }), { missed: 0, duplicated: 0, outOfOrder: 0 });
  const replicated = rig.o.replicas && { maxSendGapMs: sendGapMs, retriedAcks: sending?.retriedAcks ?? 0, keptUnanswered: sending?.keptUnanswered ?? 0, subscriptionsLost: await subscriptionsLost(rig) };
  const full: FaultResult = { fault, ...delta(sum(browsers), before), maxGapMs: Math.max(...browsers.map((b) => b.maxGap)), maxReplayMs: Math.max(...browsers.map((b) => b.maxReplay)), ...ledger, renumbered: renumbered - renumberedBefore, ...replicated, ...result };
  log(JSON.stringify(full));
  // Every fault starts from a whole cluster: every edge up, or taking no new streams because it is full.
  await rig.untilStatus(rig.edges.map((e) => e.name), ['UP', 'DRAIN']);
  await recovery(rig, browsers, Date.now());
  return full;
}

type FaultRun = (rig: Rig, browsers: Browser[], extra: Browser[]) => Promise<{ recoveryMs: number; [detail: string]: unknown }>;

const FAULT_RUNS: Record<Fault, FaultRun> = {
  /**
   * kill -9 an edge: HAProxy marks it down, its users reconnect to the others, its host's supervisor
   * restarts it, and HAProxy marks it up again once the new run passes its checks. A restart that
   * answers HAProxy's second check (0.2-0.6 s after the kill) keeps the edge from being marked down
   * at all: then markedDownMs is null and the restart is what ends the outage.
   */
  async kill(rig, browsers) {
    const victim = rig.edges[0].name;
    const streamsOnEdge = (await rig.haproxy()).get(victim)!.scur;
    const pid = await rig.edgePid(victim);
    const t0 = Date.now();
    process.kill(pid, 'SIGKILL');
    const gone = rig.untilGone([victim], pid);
    const restarted = until(`the router to see ${victim} restarted`, async () => {
      const edge = (await rig.routerStats()).edges.find((e) => e.id === victim);
      return edge && edge.pid !== pid && edge.pid !== 0 && edge.state === 'up' && edge.synced ? Date.now() : undefined;
    });
    // Marked down within about 0.6 s if ever; 5 s without it means the restart came first.
    const down = rig.untilStatus([victim], ['DOWN'], 5000).catch(() => undefined);
    // Awaited below; this only keeps an early timeout from counting as unhandled.
    for (const p of [gone, restarted]) p.catch(() => undefined);
    const recoveryMs = await recovery(rig, browsers, t0);
    const reconnectedMs = lastWelcome(browsers) - t0;
    const downAt = await down;
    const markedDownMs = downAt === undefined ? null : downAt - t0;
    const leftDirectoryMs = (await gone) - t0;
    const restartedMs = (await restarted) - t0;
    const backUpMs = (await rig.untilStatus([victim], ['UP'])) - t0;
    return { edge: victim, streamsOnEdge, markedDownMs, reconnectedMs, recoveryMs, leftDirectoryMs, restartedMs, backUpMs };
  },

  /** Pull edge2's cable: both its edges go down in HAProxy, their users move to edge1; then plug it back. */
  async unplug(rig, browsers) {
    const names = rig.edges.filter((e) => e.ns === 'c1m-edge2').map((e) => e.name);
    const rows = await rig.haproxy();
    const streamsOnHost = names.reduce((n, name) => n + rows.get(name)!.scur, 0);
    const t0 = Date.now();
    hosts('unplug', 'edge2');
    const gone = rig.untilGone(names);
    gone.catch(() => undefined); // awaited below; this only keeps an early timeout from counting as unhandled
    const markedDownMs = (await rig.untilStatus(names, ['DOWN'])) - t0;
    const recoveryMs = await recovery(rig, browsers, t0);
    const reconnectedMs = lastWelcome(browsers) - t0;
    const leftDirectoryMs = (await gone) - t0;
    const t1 = Date.now();
    hosts('plug', 'edge2');
    const backUpMs = (await rig.untilStatus(names, ['UP', 'DRAIN'])) - t1;
    const rejoinedMs =
      (await until('the router to see edge2 again', async () => {
        const { edges } = await rig.routerStats();
        return names.every((n) => edges.some((e) => e.id === n && e.state !== 'down' && e.synced)) ? Date.now() : undefined;
      })) - t1;
    // Streams the edges still hold that HAProxy closed while the cable was out: the edges learn of
    // those closes when the balancer's kernel resends its FINs over the restored cable.
    const stale = async () => {
      const [{ edges }, now] = await Promise.all([rig.routerStats(), rig.haproxy()]);
      return names.reduce((n, name) => n + (edges.find((e) => e.id === name)?.streams ?? 0) - now.get(name)!.scur, 0);
    };
    const staleStreams = await stale();
    const staleClearedMs = (await until('the stale streams to close', async () => ((await stale()) <= 0 ? Date.now() : undefined), 60_000, 100)) - t1;
    return { host: 'edge2', streamsOnHost, markedDownMs, reconnectedMs, recoveryMs, leftDirectoryMs, backUpMs, rejoinedMs, staleStreams, staleClearedMs };
  },

  /** c1m admin drain: the agent says drain, HAProxy sends the edge nothing new, its streams move at the drain rate. */
  async drain(rig, browsers) {
    const edge = rig.edges[1].name;
    const streamsOnEdge = (await rig.haproxy()).get(edge)!.scur;
    const t0 = Date.now();
    await rig.admin('drain', edge);
    const haproxyDrainMs = (await rig.untilStatus([edge], ['DRAIN'])) - t0;
    const stotAtDrain = (await rig.haproxy()).get(edge)!.stot;
    const emptyMs = (await until(`${edge} empty`, async () => ((await rig.haproxy()).get(edge)!.scur === 0 ? Date.now() : undefined), 60_000)) - t0;
    const recoveryMs = await recovery(rig, browsers, t0);
    const reconnectedMs = lastWelcome(browsers) - t0;
    const newStreamsWhileDraining = (await rig.haproxy()).get(edge)!.stot - stotAtDrain;
    const t1 = Date.now();
    await rig.admin('undrain', edge);
    // The agent's answer must lift HAProxy's drain too ("ready"), or the edge never gets a stream again.
    const undrainedMs =
      (await rig.untilStatus([edge], ['UP'], 5000).catch((err: Error) => {
        throw new Error(`${err.message}: an undrained edge's agent must answer "up ready ..." to lift HAProxy's drain`);
      })) - t1;
    return { edge, streamsOnEdge, drainRate: rig.o.drainRate, haproxyDrainMs, emptyMs, reconnectedMs, newStreamsWhileDraining, recoveryMs, undrainedMs };
  },

  /** Restart the router: the new one rebuilds the directory from the edges; no stream ends. */
  router: (rig, browsers) => restart(rig, browsers, 'router', () => rig.startRouter()),

  /** Restart nats-server: every process reconnects, the router resyncs; no stream ends. */
  nats: (rig, browsers) => restart(rig, browsers, 'nats', () => rig.startNats()),

  /**
   * Fill the cluster: new users arrive at about 200 streams a second until HAProxy holds every edge
   * at its limit (its maxconn, the edge's capacity), then 10 more. HAProxy must stop sending each
   * edge streams before the edge refuses one (no connect error, retry, 503, or stream closed before
   * its welcome), and keep the last 10 waiting in its queue rather than overfill an edge.
   */
  async fill(rig, browsers, extra) {
    const t0 = Date.now();
    const before = await rig.haproxy();
    const room = [...before.values()].reduce((n, r) => n + r.slim - r.scur, 0);
    const fill: Browser[] = [];
    const arrive = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const b = new Browser(200_000 + fill.length, '127.0.0.1', rig.o.bindPort);
        fill.push(b);
        extra.push(b);
        if (i % 20 === 19) await sleep(100);
      }
    };
    await arrive(room);
    await until('the fill streams to open', () => (fill.every((b) => b.open) ? true : undefined), 30_000);
    const full = await rig.haproxy();
    await arrive(10);
    await sleep(1000);
    const queued = (await rig.haproxy(true)).get('BACKEND')!.qcur;
    const openedBeyond = fill.slice(room).filter((b) => b.open).length;
    // The router hears each edge's count once a second.
    await sleep(1000);
    const edges = (await rig.routerStats()).edges;
    const after = await rig.haproxy();
    const total = (pick: (r: ServerRow) => number, rows = after) => [...rows.values()].reduce((n, r) => n + pick(r), 0);
    const result = {
      room,
      opened: fill.filter((b) => b.open).length,
      perEdge: rig.edges.map((e) => `${e.name} ${full.get(e.name)!.scur}/${e.capacity} (edge: ${edges.find((x) => x.id === e.name)?.streams})`).join(', '),
      everyEdgeAtLimit: [...full.values()].every((r) => r.scur === r.slim),
      overCapacity: rig.edges.filter((e) => after.get(e.name)!.smax > e.capacity! || (edges.find((x) => x.id === e.name)?.streams ?? 0) > e.capacity!).length,
      queued,
      openedBeyond,
      refusedByEdge: fill.reduce((n, b) => n + b.tally.refused, 0),
      failedAttempts: fill.reduce((n, b) => n + b.tally.failed, 0),
      connectErrors: total((r) => r.econ) - total((r) => r.econ, before),
      retries: total((r) => r.wretr) - total((r) => r.wretr, before),
      redispatches: total((r) => r.wredis) - total((r) => r.wredis, before),
      recoveryMs: Date.now() - t0,
    };
    for (const b of fill) b.close();
    await until('the fill streams to close', async () => (total((r) => r.scur, await rig.haproxy()) <= total((r) => r.scur, before) ? true : undefined));
    return result;
  },

  /**
   * A whole host dies (replicated rig): kill -9 of every process in edge2's namespace (nats-server, router, edges)
   * and its data directory deleted; its users move to edge1's edges, the partitions its router led to the others.
   * After HOST_ABSENT_MS it is started again empty and must serve by itself: its nats-server catches up from the
   * others, its router rebuilds its views and takes sends again (answering every subscription is checked after
   * each fault), HAProxy takes its edges back.
   */
  async host(rig, browsers) {
    const victim: Host = 'edge2';
    const names = rig.edges.filter((e) => e.ns === `c1m-${victim}`).map((e) => e.name);
    const led = await rig.leading(victim);
    const t0 = Date.now();
    const killed = (await rig.killHost(victim)).length;
    const recoveryMs = await recovery(rig, browsers, t0);
    await sleep(Math.max(0, t0 + HOST_ABSENT_MS - Date.now()));
    const t1 = Date.now();
    const routerStarts = await rig.startHost(victim);
    const startedMs = Date.now() - t1;
    const backUpMs = (await rig.untilStatus(names, ['UP', 'DRAIN'], 30_000)) - t1;
    return { host: victim, killed, led, recoveryMs, routerStarts, startedMs, backUpMs, ...(await backInService(rig, browsers, victim)) };
  },

  /**
   * SIGSTOP of the router leading partition 0 for FREEZE_MS, longer than the lease: the partition moves to
   * another router. Then SIGCONT: the thawed router must do no harm (its publish refused, nothing numbered
   * twice: the ledger's renumbered); it exits, and is started again here, or goes on as a follower.
   */
  async freeze(rig, browsers) {
    const host = await until('a router to lead partition 0', () => rig.leaderOf(0), 20_000, 200);
    const pid = rig.routerPid(host);
    const t0 = Date.now();
    process.kill(pid, 'SIGSTOP');
    let movedTo: Host;
    let movedMs: number;
    let recoveryMs: number;
    try {
      movedTo = await until('partition 0 to move', () => rig.leaderOf(0, host), 30_000, 100);
      movedMs = Date.now() - t0;
      recoveryMs = await recovery(rig, browsers, t0);
      await sleep(Math.max(0, t0 + FREEZE_MS - Date.now()));
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const t1 = Date.now();
    const back = await backInService(rig, browsers, host);
    const recoveryThawedMs = await recovery(rig, browsers, t1);
    return { host, frozenMs: t1 - t0, movedTo, movedMs, recoveryMs, thawed: back.restarted ? 'exited, started again' : 'went on', ...back, recoveryThawedMs };
  },

  /**
   * A host's cable pulled for CUT_MS (hosts.sh unplug): the host whose router leads a partition, edge1 aside
   * (edge2's edges cannot hold all of edge1's users). The majority keeps serving; the minority takes no sends
   * (a send to its own router from inside it is not acknowledged; an id numbered twice would show in the
   * ledger's renumbered); plugged back, it serves again.
   */
  async cut(rig, browsers) {
    const leaders = await Promise.all((['brain', 'edge2'] as const).map(async (h) => ((await rig.leading(h))?.length ? h : undefined)));
    const host: Host = leaders.find((h) => h !== undefined) ?? 'brain';
    const names = rig.edges.filter((e) => e.ns === `c1m-${host}`).map((e) => e.name);
    const led = await rig.leading(host);
    const t0 = Date.now();
    hosts('unplug', host);
    let minority: { attempts: number; acknowledged: number };
    let recoveryMs: number;
    try {
      recoveryMs = await recovery(rig, browsers, t0);
      await sleep(Math.max(0, t0 + 3000 - Date.now()));
      minority = await minoritySends(rig, browsers, host);
      await sleep(Math.max(0, t0 + CUT_MS - Date.now()));
    } finally {
      hosts('plug', host);
    }
    const t1 = Date.now();
    if (names.length) await rig.untilStatus(names, ['UP', 'DRAIN'], 30_000);
    const back = await backInService(rig, browsers, host);
    const recoveryPluggedMs = await recovery(rig, browsers, t1);
    return { host, led, cutMs: t1 - t0, recoveryMs, minorityAttempts: minority.attempts, minorityAcknowledged: minority.acknowledged, ...back, recoveryPluggedMs };
  },
};

/** How long the lost host stays away, the frozen router frozen (the lease is 2 s), the cable out. */
const HOST_ABSENT_MS = 3000;
/** How long after a fault's end an acknowledged probe may still arrive before the ledger counts it missed. */
const SETTLE_MS = 30_000;
const FREEZE_MS = 4000;
const CUT_MS = 10_000;
/** How long a router back from a fault, alive with its API closed, is watched before it counts as standing by. */
const STANDS_BY_MS = 5000;

/**
 * Watches `host`'s router once the fault is over, until it serves: it takes a send through its own API (each try a
 * new probe, in the ledger), or it stands by (alive, its API closed for STANDS_BY_MS: every partition is led by
 * the others). One that exits (crash-only: it lost a partition's lease, its publish was refused) is started
 * again, as its supervisor would. Also what it leads then.
 */
async function backInService(rig: Rig, browsers: Browser[], host: Host) {
  const t0 = Date.now();
  let restarted = false;
  let aliveSince = t0;
  const subject = String(browsers[0].id);
  const state = await until(`${host}'s router to serve again`, async () => {
    if (rig.procs.get(`router-${host}`)!.child.exitCode !== null || rig.procs.get(`router-${host}`)!.child.signalCode !== null) {
      await rig.startRouter(host);
      restarted = true;
      aliveSince = Date.now();
    }
    if (await rig.apiOpen(host)) return (await sendProbe(rig, browsers, subject, ++seq, host)) ? 'serves' : undefined;
    return Date.now() - aliveSince >= STANDS_BY_MS ? 'stands by' : undefined;
  }, 60_000, 200);
  return { restarted, state, servesMs: Date.now() - t0, leads: await rig.leading(host) };
}

/**
 * From inside a host cut off, a send to its own router for a subject of each partition, as a backend on that
 * host would make it (curl in its namespace). Each must go unacknowledged; one that is taken enters the ledger.
 */
async function minoritySends(rig: Rig, browsers: Browser[], host: Host): Promise<{ attempts: number; acknowledged: number }> {
  const headers = join(rig.dir, 'backend-headers');
  writeFileSync(headers, `authorization: Bearer ${rig.token}\n`, { mode: 0o600 });
  const subjects = Array.from({ length: rig.o.partitions }, (_, p) => browsers.find((b) => partitionOf(String(b.id), rig.o.partitions) === p)?.id).filter((id) => id !== undefined);
  let acknowledged = 0;
  for (const subject of subjects) {
    const s = ++seq;
    const argv = ['ip', 'netns', 'exec', `c1m-${host}`, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '8', '-H', `@${headers}`];
    argv.push('--data-binary', `m ${subject} ${s} ${Date.now()}`, `http://${rig.addr[host]}:${API_PORT}/send/${subject}`);
    const { stdout } = await execFile(argv[0], argv.slice(1)).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    if (stdout.trim() === '200') {
      acknowledged++;
      for (const b of browsers) if (b.hears(String(subject))) b.ack(`${subject} ${s}`);
    }
  }
  return { attempts: subjects.length, acknowledged };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      users: { type: 'string', default: '400' },
      faults: { type: 'string' },
      replicas: { type: 'string' },
      partitions: { type: 'string', default: '2' },
      stream: { type: 'boolean', default: false },
      sends: { type: 'string', default: '4000' },
      capacity: { type: 'string', default: '300' },
      'small-capacity': { type: 'string', default: '150' },
      'drain-rate': { type: 'string', default: '100' },
    },
  });
  const why = cannotRun();
  if (why) {
    console.error(`faults: ${why}`);
    process.exit(2);
  }
  // Ctrl-C: end what the run started and take the hosts down, rather than leave them behind.
  process.once('SIGINT', () => {
    for (const proc of running) proc.child.kill('SIGKILL');
    hosts('down');
    process.exit(130);
  });
  if (values.stream) {
    // The hosts' JetStream cluster alone: its leader's host lost and back empty, then its leader's host cut off.
    const { host, cut, dir } = await runStreamFaults({ host: 'edge1', cut: 'edge2' });
    console.table([host, cut].map((r) => ({ ...r, returned: JSON.stringify(r!.returned), wrong: r!.wrong.join('; ') })));
    console.log(`logs in ${dir}`);
    return;
  }
  const replicas = values.replicas === undefined ? undefined : Number(values.replicas);
  const faults = (values.faults?.split(',') ?? (replicas ? BRAIN_FAULTS : FAULTS)) as Fault[];
  const rig = { capacity: Number(values.capacity), smallCapacity: Number(values['small-capacity']), drainRate: Number(values['drain-rate']), replicas, partitions: Number(values.partitions) };
  const { results, comparison, dir } = await runFaults({ users: Number(values.users), faults, sends: Number(values.sends), rig });
  console.table(comparison);
  console.table(
    results.map(({ fault, recoveryMs, ends, misdelivered, refused, maxGapMs, maxReplayMs, missed, duplicated, lost, renumbered, maxSendGapMs, retriedAcks, keptUnanswered, subscriptionsLost }) => ({
      fault, recoveryMs, ends, misdelivered, refused, maxGapMs, maxReplayMs, missed, duplicated, lost, renumbered,
      ...(replicas && { maxSendGapMs, retriedAcks, keptUnanswered, subscriptionsLost: JSON.stringify(subscriptionsLost) }),
    })),
  );
  console.log(`logs in ${dir}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    console.error(`faults: ${err.stack ?? err.message}`);
    process.exit(1);
  });
}
