/**
 * `c1m run`: the whole C1M test on one box, as part 3 of the original ran it.
 * Loads the friends graph (unless the store holds it), starts `c1m cluster`
 * with enough edges, ramps the C flood to the target, holds, runs the message
 * generator (one rate, or steps of rates), stops everything it started, and
 * writes a report folder (loadgen/report.ts). While it runs, a sampler reads
 * /proc every second: streams, RSS and PSS and CPU of each role, kernel memory.
 */
import { type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { barabasiAlbertEdgeCount } from '../subsmanager/graph.js';
import { historyOnDisk } from '../subsmanager/history-file.js';
import { latencySummary, newHistogram, parseSources, rowsFromRanges, runFlood, type FloodSummary, type FloodTotals } from './flood.js';
import { runMsggen } from './msggen.js';
import { credsFile } from '../cluster/nats-auth.js';
import type { RouterStats } from '../cluster/router-process.js';
import { routerDb } from '../cluster/run.js';
import { commandArgv } from '../server/options.js';
import { spawnC1m } from '../cluster/supervisor.js';
import { ROLES, type RunOptions, type Role, type Phase, type KernelMemory, type Sample, type FullSample, type RunResult, P99_TARGET_MS } from './run-result.js';
import { writeReport } from './report.js';
import { c1mCommandOf, childrenOf, commOf, cpuOf, machineCores, machineTicks, pssOf, rssOf, spawnCluster } from './server-process.js';

/** PSS is read on every PSS_EVERY-th sample only: reading it walks each process's page tables. */
const PSS_EVERY = 10;


const emptyRoles = (): Record<Role, number> => Object.fromEntries(ROLES.map((r) => [r, 0])) as Record<Role, number>;

/** Process start time (clock ticks since boot): with the pid, it names a process, so a recycled pid is never killed. */
function startTimeOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[19];
  } catch {
    return undefined;
  }
}

function kernelMemory(): KernelMemory {
  const meminfo = readFileSync('/proc/meminfo', 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  const tcp = /^TCP: (.*)$/m.exec(readFileSync('/proc/net/sockstat', 'utf8'))?.[1] ?? '';
  const field = (key: string) => Number(new RegExp(`\\b${key} (\\d+)`).exec(tcp)?.[1] ?? 0);
  return {
    usedBytes: kb('MemTotal') - kb('MemAvailable'),
    slabBytes: kb('Slab'),
    sunreclaimBytes: kb('SUnreclaim'),
    tcpMemBytes: field('mem') * 4096,
    tcpInUse: field('inuse'),
    tcpTimeWait: field('tw'),
  };
}

/**
 * What a run measures: where its streams open, where its sends go, and its processes by role. `c1m run` starts
 * `c1m cluster` on this box (localCluster); a harness may bring its own (bench/million-hosts.ts: edges, routers and
 * nats-servers on simulated hosts).
 */
export interface Deployment {
  /** Where the flood opens streams; with several, its workers take them in turn. */
  servers: { host: string; port: number }[];
  /** The backend API: the message generator's sends, the sampler's /stats. */
  api: { host: string; port: number; token?: string };
  /** What the report says of it. */
  summary: { edges: number; capacity: number; port: number; apiPort: number; nats: string };
  /** A replicated store's bus (`c1m friends load --nats …` options) and every router's view file, which the graph goes through. */
  store?: { busArgs: string[]; views: string[] };
  /** A SQLite file whose history the report measures at the end. */
  historyFile?: string;
  /** Its server processes now, by role. */
  pids(): Record<'edges' | 'router' | 'nats' | 'supervisor', number[]>;
  running(): boolean;
  /** What its processes printed: the report keeps it. */
  output(): string;
  /** Stops its processes; the run then kills by pid whatever of its own is left. */
  stop(): Promise<void>;
}

/** Starts a deployment for a run's settings; `work`: a directory of the run's own for a replicated store's files. */
export type Deploy = (o: RunSettings, work: string | undefined) => Promise<Deployment>;

/** `c1m cluster` on loopback: its supervisor's children are the nats-servers (by name), the routers (by their c1m command) and the edges. */
const localCluster: Deploy = async (o, work) => {
  const cluster = await spawnCluster(clusterArgv(o, work), {}, 180_000);
  const running = () => cluster.child.exitCode === null && cluster.child.signalCode === null;
  return {
    servers: [{ host: '127.0.0.1', port: cluster.port }],
    api: { host: '127.0.0.1', port: cluster.apiPort },
    summary: { edges: cluster.edges.length, capacity: cluster.edges.reduce((n, e) => n + e.capacity, 0), port: cluster.port, apiPort: cluster.apiPort, nats: cluster.nats },
    store: work === undefined ? undefined : {
      busArgs: ['--nats', cluster.nats, '--nats-creds', credsFile(cluster.natsDir, 'router')],
      views: Array.from({ length: o.routers ?? 1 }, (_, i) => routerDb({ db: join(work, 'view.db'), replicas: o.replicas }, i)),
    },
    historyFile: work ? join(work, 'view.db') : o.db,
    pids() {
      const pids = { edges: [] as number[], router: [] as number[], nats: [] as number[], supervisor: [cluster.child.pid!] };
      for (const pid of childrenOf(cluster.child.pid!)) {
        if (commOf(pid) === 'nats-server') pids.nats.push(pid);
        else if (c1mCommandOf(pid) === 'router') pids.router.push(pid);
        else pids.edges.push(pid);
      }
      return pids;
    },
    running,
    output: cluster.output,
    // SIGTERM to the supervisor (it stops edges, router and nats-server in turn), SIGKILL after a grace.
    async stop() {
      if (!running()) return;
      const exited = new Promise((r) => cluster.child.once('exit', r));
      cluster.child.kill('SIGTERM');
      if ((await Promise.race([exited, sleep(45_000, 'timeout')])) === 'timeout') {
        cluster.child.kill('SIGKILL');
        await exited;
      }
    },
  };
};

/**
 * Reads every second what each role holds and spends: the deployment's
 * processes by role, and this process's flood workers.
 */
class Sampler {
  readonly samples: Sample[] = [];
  /** Every descendant of this process seen, with its start time: what cleanup may kill. */
  readonly seen = new Map<number, string>();
  phase: Phase = 'start';
  floodTotals?: FloodTotals;
  deployment?: Deployment;
  slowConsumerCloses = 0;
  private readonly cpuPrev = new Map<number, number>();
  private prevMachine = machineTicks();
  private prev = { at: performance.now(), chunks: 0, sends: 0 };
  private interval = newHistogram();
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(private readonly started: number) {}

  /** Delivery latencies as the flood reports them, in µs. */
  recordDelivery(micros: number, count: number): void {
    this.interval.recordValueWithCount(micros, count);
  }

  start(everyMs: number): void {
    this.timer = setInterval(() => {
      if (this.busy) return;
      this.busy = true;
      void this.sample().finally(() => (this.busy = false));
    }, everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Records every process this one started, and theirs, down the tree. */
  noteDescendants(): void {
    const walk = (pid: number, depth: number): void => {
      for (const child of childrenOf(pid)) {
        if (!this.seen.has(child)) this.seen.set(child, startTimeOf(child) ?? '');
        if (depth < 4) walk(child, depth + 1);
      }
    };
    walk(process.pid, 0);
  }

  private pidsByRole(): Record<Role, number[]> {
    const servers = this.deployment?.running() ? this.deployment.pids() : { edges: [], router: [], nats: [], supervisor: [] };
    const floodWorkers = childrenOf(process.pid).filter((pid) => commOf(pid) === 'flood-worker');
    return { ...servers, floodWorkers, runner: [process.pid] };
  }

  /** Takes one sample now and keeps it; `full`: with PSS whatever the turn. */
  async sample(full: true): Promise<FullSample>;
  async sample(full?: boolean): Promise<Sample>;
  async sample(full = false): Promise<Sample> {
    const pss = full || this.samples.length % PSS_EVERY === 0 ? emptyRoles() : null;
    this.noteDescendants();
    const stats = await this.routerStats();
    const now = performance.now();
    const dt = Math.max(0.001, (now - this.prev.at) / 1000);
    const sample: Sample = {
      t: +((now - this.started) / 1000).toFixed(2),
      phase: this.phase,
      open: this.floodTotals?.open ?? 0,
      serverStreams: stats?.connections ?? null,
      welcomed: this.floodTotals?.welcomed ?? 0,
      closed: this.floodTotals?.closed ?? 0,
      failed: this.floodTotals?.failed ?? 0,
      chunks: this.floodTotals?.chunks ?? 0,
      chunksPerSecond: 0,
      heartbeats: this.floodTotals?.heartbeats ?? 0,
      sends: stats?.sends ?? null,
      sendsPerSecond: 0,
      processes: emptyRoles(),
      rss: emptyRoles(),
      pss,
      cpu: emptyRoles(),
      machineCpu: { busy: 0, user: 0, system: 0, softirq: 0 },
      kernel: kernelMemory(),
      delivery: latencySummary(this.interval),
    };
    sample.chunksPerSecond = Math.round((sample.chunks - this.prev.chunks) / dt);
    if (stats) {
      sample.sendsPerSecond = Math.round((stats.sends - this.prev.sends) / dt);
      this.slowConsumerCloses = stats.slowConsumerCloses;
    }
    this.interval = newHistogram();
    for (const [role, pids] of Object.entries(this.pidsByRole()) as [Role, number[]][]) {
      for (const pid of pids) {
        try {
          const [rss, cpu] = [rssOf(pid), cpuOf(pid)];
          if (pss) pss[role] += pssOf(pid);
          sample.rss[role] += rss;
          // A process seen for the first time counts from now on.
          sample.cpu[role] += (cpu - (this.cpuPrev.get(pid) ?? cpu)) / dt;
          this.cpuPrev.set(pid, cpu);
          sample.processes[role]++;
        } catch {
          // it exited between the listing and the read
        }
      }
      sample.cpu[role] = +sample.cpu[role].toFixed(3);
    }
    const machine = machineTicks();
    sample.machineCpu = machineCores(this.prevMachine, machine);
    this.prevMachine = machine;
    this.prev = { at: now, chunks: sample.chunks, sends: stats?.sends ?? this.prev.sends };
    this.samples.push(sample);
    return sample;
  }

  private async routerStats(): Promise<RouterStats | undefined> {
    const { api } = this.deployment ?? {};
    if (!api?.port || !this.deployment!.running()) return undefined;
    try {
      const headers: Record<string, string> = api.token ? { authorization: `Bearer ${api.token}` } : {};
      const res = await fetch(`http://${api.host}:${api.port}/stats`, { headers, signal: AbortSignal.timeout(800) });
      return res.ok ? ((await res.json()) as RouterStats) : undefined;
    } catch {
      return undefined;
    }
  }
}

/** Runs a c1m CLI command to its end, resolving with the tail of what it printed; killed after `timeoutMs` or on abort. */
function runCli(args: string[], timeoutMs: number, signal: AbortSignal): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child: ChildProcess = spawnC1m(args);
    let out = '';
    child.stdout!.on('data', (d) => (out = (out + d).slice(-4000)));
    child.stderr!.on('data', (d) => (out = (out + d).slice(-4000)));
    const kill = () => child.kill('SIGKILL');
    const timer = setTimeout(kill, timeoutMs);
    signal.addEventListener('abort', kill, { once: true });
    child.once('error', reject);
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', kill);
      if (code === 0) resolvePromise(out);
      else reject(new Error(`c1m ${args.slice(0, 2).join(' ')} ended with ${code ?? sig}: ${out.trim()}`));
    });
  });
}

/**
 * The store holds the graph when it has exactly its rows (users x m, mutual:
 * two per edge); an empty store gets it generated and bulk-loaded; a store
 * with anything else is refused rather than mixed.
 */
async function ensureGraph(o: RunOptions, signal: AbortSignal, log: (line: string) => void): Promise<NonNullable<RunResult['graph']>> {
  const started = performance.now();
  const expected = 2 * barabasiAlbertEdgeCount(o.users, o.m);
  mkdirSync(dirname(resolve(o.db)), { recursive: true });
  const { openStore } = await import('../subsmanager/store.js');
  const store = openStore(o.db);
  const rows = store.count();
  store.close();
  if (rows === expected) {
    log(`graph: ${o.db} already holds ${o.users} users x m=${o.m} (${rows} subscriptions)`);
    return { rows, loaded: false, seconds: 0 };
  }
  if (rows !== 0) throw new Error(`${o.db} holds ${rows} subscriptions, not the ${o.users} x m=${o.m} graph (${expected}): give an empty or matching --db`);
  const edgesFile = `${o.db}.${o.users}x${o.m}.edges`;
  try {
    log(`graph: generating ${o.users} users x m=${o.m}`);
    await runCli(['friends', 'generate', '--users', String(o.users), '--m', String(o.m), '--seed', String(o.seed), '--out', edgesFile], 3_600_000, signal);
    log(`graph: loading ${edgesFile} into ${o.db}`);
    await runCli(['friends', 'load', edgesFile, '--db', o.db], 3_600_000, signal);
  } finally {
    rmSync(edgesFile, { force: true });
  }
  return { rows: expected, loaded: true, seconds: +((performance.now() - started) / 1000).toFixed(1) };
}

/**
 * The graph into a replicated store (`--replicas`): generated to a file, published to the store's stream as
 * `c1m friends load --nats` does, with a router's credentials; then every router's view has applied it, as its
 * file says (a router standing by has no API to ask).
 */
async function publishGraph(o: RunOptions, store: NonNullable<Deployment['store']>, work: string, signal: AbortSignal, log: (line: string) => void): Promise<NonNullable<RunResult['graph']>> {
  const started = performance.now();
  const edgesFile = join(work, 'graph.edges');
  try {
    log(`graph: generating ${o.users} users x m=${o.m}`);
    await runCli(['friends', 'generate', '--users', String(o.users), '--m', String(o.m), '--seed', String(o.seed), '--out', edgesFile], 3_600_000, signal);
    log(`graph: publishing ${edgesFile} to the store's stream`);
    const out = await runCli(['friends', 'load', edgesFile, ...store.busArgs], 3_600_000, signal);
    const last = Number(/last sequence (\d+)/.exec(out)?.[1]);
    if (!Number.isSafeInteger(last)) throw new Error(`c1m friends load --nats did not say the stream's last sequence: ${out.trim()}`);
    log(`graph: published, the stream's last sequence ${last}; waiting for every router's view`);
    const { appliedBy } = await import('../cluster/store-log.js');
    while (store.views.some((view) => appliedBy(view) < last)) {
      signal.throwIfAborted();
      await sleep(500);
    }
  } finally {
    rmSync(edgesFile, { force: true });
  }
  const rows = 2 * barabasiAlbertEdgeCount(o.users, o.m);
  log(`graph: every router's view holds it (${rows} subscriptions)`);
  return { rows, loaded: true, seconds: +((performance.now() - started) / 1000).toFixed(1) };
}

/**
 * Stops the deployment; then every process this run started that is still
 * alive (nats-server does not watch its supervisor; a cluster that never got
 * ready) is killed by pid, checked by its start time.
 */
async function stopEverything(deployment: Deployment | undefined, sampler: Sampler): Promise<void> {
  sampler.noteDescendants();
  await deployment?.stop();
  for (const [pid, start] of sampler.seen) {
    if (start && startTimeOf(pid) === start) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
}

export async function runC1m(options: RunOptions, deploy: Deploy = localCluster): Promise<RunResult & { dir: string }> {
  const { signal: outer, log: logOption, ...settings } = options;
  const log = logOption ?? ((line: string) => process.stderr.write(`${line}\n`));
  const o = { sampleMs: 1000, ...settings };
  const dir = resolve(o.out);
  mkdirSync(dir, { recursive: true });
  const plan = runPlan(o);
  const run = new C1mRun(o, log, deploy);
  const onOuterAbort = () => run.abort.abort(new Error('stopped on request (Ctrl-C or SIGTERM)'));
  outer?.addEventListener('abort', onOuterAbort, { once: true });
  if (outer?.aborted) onOuterAbort();
  warnOnMemory(o.connections, log);
  const { result, sampler, abort } = run;
  let hardStop: NodeJS.Timeout | undefined;
  try {
    if (!run.work) result.graph = await ensureGraph(o, abort.signal, log);
    abort.signal.throwIfAborted();
    result.snapshots.before = await sampler.sample(true);
    sampler.start(o.sampleMs);
    hardStop = setTimeout(() => abort.abort(new Error(`hard stop after ${plan.maxSeconds} s`)), plan.maxSeconds * 1000);
    const deployment = await run.startCluster();
    await run.ramp(deployment, plan);
    run.enter('hold');
    await sleep(o.hold * 1000, undefined, { signal: abort.signal });
    result.snapshots.peak = await sampler.sample(true);
    await run.messages(deployment, plan.rates);
  } catch (err) {
    result.status = outer?.aborted ? 'interrupted' : 'failed';
    result.error = ((abort.signal.aborted ? abort.signal.reason : err) as Error).message;
    log(`run ${result.status}: ${result.error}`);
  } finally {
    clearTimeout(hardStop);
    await run.stop();
    outer?.removeEventListener('abort', onOuterAbort);
    const last = result.phases.at(-1);
    if (last) last.end = run.now();
    result.seconds = run.now();
  }
  await writeReport(dir, result, run.deployment?.output() ?? '');
  log(`report: ${join(dir, 'report.md')}`);
  return { ...result, dir };
}

/** c1m run's settings, its sampling period resolved. */
export type RunSettings = Omit<RunOptions, 'signal' | 'log'> & { sampleMs: number };

/** The sources the flood needs, the message rates and the hard stop; refuses too few source addresses. */
function runPlan(o: RunSettings) {
  const sources = parseSources(o.src);
  const perAddress = o.ports[1] - o.ports[0] + 1;
  const needed = Math.ceil(o.connections / perAddress);
  if (sources.length < needed) throw new Error(`${o.connections} connections need at least ${needed} source addresses at ${perAddress} ports each; --src gives ${sources.length}`);
  const rates = o.msgRates ?? [o.msgRate ?? 0];
  const messageSeconds = rates.length * (o.msgSeconds + 12) + o.warmup;
  const maxSeconds = o.maxSeconds ?? Math.ceil((3 * o.connections) / o.rate + o.hold + messageSeconds + 180);
  return { sources, rates, maxSeconds };
}

/** Warns when the box has too little memory for `connections` streams. */
function warnOnMemory(connections: number, log: (line: string) => void): void {
  const availableBytes = Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) * 1024;
  // Kernel memory for both ends of a loopback connection plus the server's and the client's own (design notes).
  if (availableBytes < connections * 12_000) log(`warning: ${Math.round(availableBytes / 2 ** 20)} MiB available; ${connections} connections need about ${Math.round((connections * 12_000) / 2 ** 20)} MiB`);
}

/**
 * `c1m cluster`'s command line for this run: every option it shares with `c1m run`, and the store (replicated: the
 * run's own views, in `work`), the highest user id and the state directory the run picks.
 */
export function clusterArgv(o: RunSettings, work: string | undefined): string[] {
  const { argv } = commandArgv('cluster', {
    routers: o.routers,
    partitions: o.partitions,
    replicas: o.replicas,
    stateDir: work && join(work, 'state'),
    db: work ? join(work, 'view.db') : o.db,
    maxUserId: Math.max(o.users, o.connections),
    batchMs: o.batchMs,
    historySeconds: o.historySeconds,
    historyPerSubject: o.historyPerSubject,
    heartbeatSeconds: o.heartbeatSeconds,
    // The cluster sizes itself from --connections where --edges does not say.
    edges: o.edges,
    connections: o.connections,
  });
  return argv;
}

/** One run's state, phase by phase: what it started, what it measured, and how it stops. */
class C1mRun {
  readonly started = performance.now();
  readonly abort = new AbortController();
  /** Resolves once the run is aborted. */
  readonly aborted = new Promise<void>((r) => this.abort.signal.addEventListener('abort', () => r(), { once: true }));
  readonly sampler = new Sampler(this.started);
  readonly result: RunResult;
  /** Replicated, the routers' views and the JetStream servers' stores are the run's own, made empty and removed after. */
  readonly work: string | undefined;
  deployment: Deployment | undefined;
  private flood: Promise<FloodSummary> | undefined;
  private readonly floodStop = new AbortController();
  /** Delivery latencies of the message step under way. */
  private stepHistogram: ReturnType<typeof newHistogram> | undefined;

  constructor(
    private readonly o: RunSettings,
    private readonly log: (line: string) => void,
    private readonly deploy: Deploy,
  ) {
    this.work = o.replicas ? mkdtempSync(join(tmpdir(), 'c1m-run-')) : undefined;
    this.result = { status: 'complete', startedAt: new Date().toISOString(), seconds: 0, options: o, snapshots: {}, phases: [], steps: [], samples: this.sampler.samples };
  }

  /** Seconds since the run started. */
  now(): number {
    return +((performance.now() - this.started) / 1000).toFixed(2);
  }

  enter(phase: Phase): void {
    const t = this.now();
    const last = this.result.phases.at(-1);
    if (last) last.end = t;
    this.result.phases.push({ phase, start: t, end: t });
    this.sampler.phase = phase;
    this.log(`${phase} at ${t}s`);
  }

  /** Starts the deployment (`c1m cluster`); replicated, publishes the graph to its store. */
  async startCluster(): Promise<Deployment> {
    const { o, result, log, work } = this;
    this.enter('start');
    const deployment = (this.deployment = await this.deploy(o, work));
    this.sampler.deployment = deployment;
    const { summary } = deployment;
    result.cluster = { ...summary, startSeconds: this.now() - result.phases[0].start, restarts: 0 };
    log(`cluster: ${summary.edges} edges, capacity ${summary.capacity}, streams at ${deployment.servers.map((s) => `${s.host}:${s.port}`).join(', ')}, API on ${deployment.api.host}:${deployment.api.port}`);
    if (work && deployment.store) result.graph = await publishGraph(o, deployment.store, work, this.abort.signal, log);
    this.abort.signal.throwIfAborted();
    return deployment;
  }

  /** Opens every stream at the connect rate, and holds them until stop(); resolves once all are open. */
  async ramp(deployment: Deployment, plan: ReturnType<typeof runPlan>): Promise<void> {
    const { o, sampler } = this;
    this.enter('ramp');
    let ramped: () => void = () => {};
    const rampDone = new Promise<void>((r) => (ramped = r));
    let nextLine = 0;
    const flood = (this.flood = runFlood({
      ...deployment.servers[0],
      servers: deployment.servers,
      rows: rowsFromRanges(plan.sources, [1, o.connections]),
      ports: o.ports,
      rate: o.rate,
      concurrency: o.concurrency,
      // Held until floodStop: the run decides when the hold ends.
      duration: plan.maxSeconds,
      maxSeconds: plan.maxSeconds,
      stop: this.floodStop.signal,
      reportMs: 500,
      readEveryMs: o.readEveryMs,
      transport: o.transport,
      topics: o.topics,
      onReport: (totals) => {
        sampler.floodTotals = totals;
        if (totals.ramped) ramped();
        // The original's monitor line, every 10 s.
        if (totals.elapsedSeconds >= nextLine) {
          nextLine += 10;
          this.log(`{Open, Closed, Chunks, Bytes} = {${totals.open}, ${totals.closed}, ${totals.chunks}, ${totals.bytes}} failed=${totals.failed} errors=${JSON.stringify(totals.errors)}`);
        }
      },
      onDelivery: (micros, count) => {
        sampler.recordDelivery(micros, count);
        this.stepHistogram?.recordValueWithCount(micros, count);
      },
    }));
    // A flood that ends before the run stops it (a worker failed, its own hard stop) ends the run.
    const floodEnded = () => {
      if (!this.floodStop.signal.aborted) this.abort.abort(new Error('the flood ended before the run did'));
    };
    flood.then(floodEnded, floodEnded);
    await Promise.race([rampDone, this.aborted]);
    this.abort.signal.throwIfAborted();
  }

  /** The warm-up, then one measured step per rate: what msggen achieved, what the streams got, and how late. */
  async messages(deployment: Deployment, rates: number[]): Promise<void> {
    const { o, sampler, result } = this;
    const messages = (rate: number, seconds: number) =>
      Promise.race([
        runMsggen({
          apiHost: deployment.api.host,
          apiPort: deployment.api.port,
          token: deployment.api.token,
          users: o.users,
          generators: o.generators,
          interval: o.sendInterval,
          rate: rate || undefined,
          duration: seconds,
          connections: o.msgConnections,
          size: 0,
          topics: o.topics,
          topicShare: o.topicShare,
        }),
        this.aborted.then(() => undefined),
      ]);
    if (o.warmup > 0) {
      this.enter('warm-up');
      const summary = await messages(rates[0], o.warmup);
      this.abort.signal.throwIfAborted();
      if (summary) this.log(`warm-up at ${summary.configuredRate}/s: achieved ${summary.achievedRate} sends/s (not measured)`);
    }

    this.enter('messages');
    for (const rate of rates) {
      const stepHistogram = (this.stepHistogram = newHistogram());
      const stepStart = this.now();
      const chunksBefore = sampler.floodTotals?.chunks ?? 0;
      const summary = await messages(rate, o.msgSeconds);
      if (!summary) break;
      // Chunks of the last sends still on their way.
      await sleep(1000, undefined, { signal: this.abort.signal });
      const delivery = latencySummary(stepHistogram);
      const deliveredChunksPerSecond = Math.round(((sampler.floodTotals?.chunks ?? 0) - chunksBefore) / summary.seconds);
      const errors = Object.values(summary.errors).reduce((n, e) => n + e, 0);
      const sustained = summary.achievedRate >= 0.95 * summary.configuredRate && errors === 0 && summary.skipped === 0 && delivery.p99 <= P99_TARGET_MS;
      result.steps.push({ rate: summary.configuredRate, start: stepStart, msggen: summary, deliveredChunksPerSecond, delivery, sustained });
      this.log(`messages at ${summary.configuredRate}/s: achieved ${summary.achievedRate} sends/s, ${deliveredChunksPerSecond} chunks/s delivered, delivery p99 ${delivery.p99} ms${sustained ? '' : ' (not sustained)'}`);
    }
    this.stepHistogram = undefined;
    const during = sampler.samples.filter((s) => s.phase === 'messages');
    result.snapshots.messages = during.reduce<Sample | undefined>((a, s) => (!a || s.kernel.usedBytes > a.kernel.usedBytes ? s : a), undefined);
  }

  /** Stops the flood and the cluster, takes the last sample, and notes what the cluster left: restarts, its history's size. */
  async stop(): Promise<void> {
    const { result, sampler, deployment, work } = this;
    if (result.phases.length) this.enter('stop');
    this.floodStop.abort();
    try {
      if (this.flood) result.flood = await this.flood;
    } catch (err) {
      result.status = result.status === 'complete' ? 'failed' : result.status;
      result.error ??= (err as Error).message;
    }
    if (sampler.floodTotals && result.flood) sampler.floodTotals = result.flood;
    if (deployment) {
      result.slowConsumerCloses = sampler.slowConsumerCloses;
      await sampler.sample();
    }
    sampler.stop();
    await stopEverything(deployment, sampler);
    if (deployment && result.cluster) result.cluster.restarts = (deployment.output().match(/child exited; restarting/g) ?? []).length;
    if (deployment?.historyFile && this.o.historySeconds > 0) result.history = historyOnDisk(deployment.historyFile);
    if (work) rmSync(work, { recursive: true, force: true });
  }
}
