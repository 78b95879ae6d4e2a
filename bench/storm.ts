/**
 * The reconnect storm (docs/history.md): `c1m cluster` with a
 * port per edge, one edge holding the storm group's streams (by default as
 * many as one edge takes) and the others the calm group's, and a paced sender
 * through the router's API to random users of a friends graph, each send
 * reaching its sender and their followers, and with --topics to topics, which
 * half the streams listen to and a third of the users subscribe to (some
 * both: they must get each message once). While sends flow, the storm edge is
 * killed with kill -9; its clients come back as the browser client does
 * (full-jitter backoff) on the other edges, resuming from the last id they
 * saw, and the router replays what they missed (its history joined with their
 * subscriptions).
 *
 * Reports: per storm client, the time from the kill until its stream is back
 * with every acknowledged message sent before it reconnected; the ledger of
 * every client over the whole run (missed, duplicated, out of order, lost);
 * the CPU of the router, NATS and the edges, and the calm streams' delivery
 * latency, in a baseline window before the kill and during the storm.
 *
 *   npm run bench:storm -- [--storm N] [--calm 10000] [--edges 3] [--rate 500] [--follows 3] [--topics 0] [--topic-share 0.3] [--timeout 30]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, Option } from 'commander';
import type { RouterStats } from '../cluster/router-process.js';
import { stopChild } from '../cluster/supervisor.js';
import { ApiClient, type Answer } from '../loadgen/api-client.js';
import { WORKER_NICE } from '../loadgen/flood.js';
import { cpuOf, machineCores, machineTicks, spawnCluster, type ClusterProcess, type MachineTicks } from '../loadgen/server-process.js';
import { epochMs } from '../router/latency.js';
import { openFileLimit, pausesAt, streamCapacity } from '../server/limits.js';
import { xoshiro128ss } from '../subsmanager/graph.js';
import { openStore } from '../subsmanager/store.js';
import type { Subject } from '../subsmanager/subjects.js';
import { Ledger } from './ledger.js';
import { percentile, post } from './probe.js';
import type { ClientEvents, ClientsReply, OpenCommand } from './storm-clients.js';
import { listensTo, randomTopic, subscribesTo, topicSubscriptions } from './topics.js';
import { until } from './until.js';

const HOST = '127.0.0.1';
/** Under vitest this module runs from source; the client processes run from dist/. */
const CLIENTS_JS = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../dist/bench/storm-clients.js' : './storm-clients.js', import.meta.url));
/** Source addresses of the clients' own, so that neither other runs' ports nor their TIME_WAITs get in the way. */
const SOURCES = Array.from({ length: 8 }, (_, i) => `127.0.50.${i + 1}`);
/** Descriptors a client process keeps beyond its streams' sockets. */
const CLIENT_SPARE_FDS = 1000;
/** Reconnecting clients pick an edge at random: the edges they land on need room for an uneven spread. */
const SPREAD_ROOM = 0.95;
/** Sends waiting for their answer at most; the rest of a tick's sends are skipped and counted. */
const MAX_IN_FLIGHT = 64;
/** Keep-alive connections of the sender to the router's API (msggen's default). */
const SENDER_CONNECTIONS = 8;
/** The target: every storm client resumed within this long of the kill. */
const TARGET_MS = 3000;

export interface StormOptions {
  /** Streams on the edge that is killed: at most what one edge takes. */
  storm: number;
  /** Streams on the other edges, which nothing touches. */
  calm: number;
  edges: number;
  /** Sends per second, each to a random user. */
  rate: number;
  /** How many others each user follows, at random. */
  follows: number;
  /** Topics (0: none): streams listen to and users subscribe to them as bench/topics.ts says. */
  topics: number;
  /** The share of sends that go to a random topic rather than a random user (with topics). */
  topicShare: number;
  warmupSeconds: number;
  baselineSeconds: number;
  /** The longest wait for every storm client to resume. */
  timeoutSeconds: number;
  /** Sends go on this long after the last storm client resumed, before the ledger is settled. */
  afterSeconds: number;
  /** Streams per client process at most (the open-file limit bounds it too). */
  perProcess: number;
  seed: number;
  log?: (line: string) => void;
}

export const STORM_DEFAULTS: Omit<StormOptions, 'storm'> = {
  calm: 10_000,
  edges: 3,
  rate: 500,
  follows: 3,
  topics: 0,
  topicShare: 0.3,
  warmupSeconds: 3,
  baselineSeconds: 5,
  timeoutSeconds: 30,
  afterSeconds: 1,
  perProcess: 10_000,
  seed: 1,
};

/** The storm group's default size: the streams one edge takes before it stops listening, from the open-file limit. */
export const defaultStorm = (): number => pausesAt(streamCapacity());

/** Why the run does not fit edges of these capacities (streams each may hold), or undefined when it does. */
export function doesNotFit(o: Pick<StormOptions, 'storm' | 'calm'>, capacities: number[]): string | undefined {
  if (capacities.length < 2) return 'needs at least 2 edges: one to kill, and one for its clients to come back to';
  const [stormEdge, ...others] = capacities.map(pausesAt);
  if (o.storm > stormEdge) return `--storm ${o.storm}: one edge takes ${stormEdge} streams before it stops listening (capacity ${capacities[0]}, from the open-file limit)`;
  const room = Math.floor(SPREAD_ROOM * others.reduce((a, b) => a + b, 0));
  if (o.storm + o.calm > room)
    return `--storm ${o.storm} + --calm ${o.calm}: after the kill the other ${others.length} edges would hold ${o.storm + o.calm} streams, more than ${room} (${SPREAD_ROOM * 100}% of what they take); add edges or lower --calm`;
  return undefined;
}

/**
 * Each of users 1..n follows `follows` others, at random, and some subscribe to a topic (subscribesTo); writes the
 * subscriptions to a new store and returns each user's subscribers.
 */
function friends(db: string, n: number, follows: number, topics: number, seed: number): number[][] {
  const random = xoshiro128ss(seed);
  const subscribers: number[][] = Array.from({ length: n + 1 }, () => []);
  const pairs: [number, number][] = [];
  for (let user = 1; user <= n; user++) {
    const followed = new Set<number>();
    while (followed.size < Math.min(follows, n - 1)) {
      const other = 1 + Math.floor(random() * n);
      if (other !== user) followed.add(other);
    }
    for (const other of followed) {
      pairs.push([user, other]);
      subscribers[other].push(user);
    }
  }
  const store = openStore(db);
  store.addSubscriptions(pairs);
  store.addSubscriptions(topicSubscriptions(n, topics));
  store.close();
  return subscribers;
}

/** A child process holding streams (bench/storm-clients.ts); its events go to `onEvents`. */
class ClientProcess {
  readonly child: ChildProcess;

  constructor(
    readonly group: 'storm' | 'calm',
    onEvents: (group: 'storm' | 'calm', events: ClientEvents) => void,
  ) {
    this.child = fork(CLIENTS_JS, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    // At the edges' priority, as the flood's workers: at nice 0 the clients would take the cores from the edges they measure.
    if (this.child.pid) setPriority(this.child.pid, WORKER_NICE);
    this.child.on('message', (m: ClientsReply) => m.type === 'events' && onEvents(group, m));
  }

  async open(cmd: Omit<OpenCommand, 'type'>): Promise<void> {
    const opened = this.next('opened', 150_000);
    this.child.send({ type: 'open', ...cmd });
    const { welcomed, count, ms } = await opened;
    if (welcomed < count) throw new Error(`only ${welcomed} of ${count} ${this.group} streams opened in ${ms} ms`);
  }

  /** Closes its streams (RST) and waits for it to exit; one that does not within 10 s is killed. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    try {
      this.child.send({ type: 'close' });
      await this.next('closed', 10_000);
    } catch {
      this.child.kill('SIGKILL');
    }
    await exited;
  }

  /** The next reply of this type; an error if the process exits or says nothing within `timeoutMs`. */
  private next<T extends ClientsReply['type']>(type: T, timeoutMs: number): Promise<Extract<ClientsReply, { type: T }>> {
    return new Promise((resolve, reject) => {
      const off = () => {
        clearTimeout(timer);
        this.child.off('message', onMessage).off('exit', onExit);
      };
      const timer = setTimeout(() => (off(), reject(new Error(`client process ${this.child.pid}: no '${type}' within ${timeoutMs} ms`))), timeoutMs);
      const onMessage = (m: ClientsReply) => m.type === type && (off(), resolve(m as Extract<ClientsReply, { type: T }>));
      const onExit = (code: number | null) => (off(), reject(new Error(`client process ${this.child.pid} exited (${code}) before '${type}'`)));
      this.child.on('message', onMessage).once('exit', onExit);
    });
  }
}

interface Send {
  /** A user, or a topic. */
  subject: Subject;
  /** Epoch ms when its request was written (NaN until then). */
  sentAt: number;
  /** Set once the router acknowledged it: the message id it gave, and when the answer came. */
  id?: number;
  ackedAt?: number;
}

/** Sends at a fixed rate, each to a random user or topic, numbered (seq) and timed in its body; each acknowledged send goes into its recipients' ledgers. */
class Sender {
  readonly sends: Send[] = [];
  errors = 0;
  /** Sends not made because MAX_IN_FLIGHT were waiting for their answers. */
  skipped = 0;
  /** msggen's keep-alive client: a request's body is made, and its send time taken, as it is written. */
  private readonly api: ApiClient;
  private inFlight = 0;
  private stopped = false;
  private running: Promise<void> = Promise.resolve();

  constructor(
    apiPort: number,
    private readonly users: number,
    private readonly topics: number,
    private readonly topicShare: number,
    private readonly recipients: (subject: Subject) => Iterable<number>,
    private readonly ledgers: Ledger[],
  ) {
    this.api = new ApiClient(HOST, apiPort, SENDER_CONNECTIONS, {});
  }

  async start(rate: number, maxSeconds: number): Promise<void> {
    await this.api.ready();
    this.running = this.loop(rate, maxSeconds);
  }

  /** Stops sending; resolves once every send made has its answer (or 10 s passed). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    this.api.close();
  }

  acked(from = -Infinity, to = Infinity): number {
    return this.sends.filter((s) => s.ackedAt !== undefined && s.ackedAt >= from && s.ackedAt <= to).length;
  }

  private async loop(rate: number, maxSeconds: number): Promise<void> {
    const t0 = performance.now();
    let due = 0;
    while (!this.stopped && performance.now() - t0 < maxSeconds * 1000) {
      const target = Math.floor(((performance.now() - t0) * rate) / 1000);
      for (; due < target; due++) {
        if (this.inFlight >= MAX_IN_FLIGHT) this.skipped++;
        else this.sendOne();
      }
      await sleep(5);
    }
    await until('the last sends to be answered', () => (this.inFlight === 0 ? true : undefined), 10_000, 10).catch(() => undefined);
  }

  private sendOne(): void {
    const seq = this.sends.length;
    const subject = this.topics > 0 && Math.random() < this.topicShare ? randomTopic(this.topics) : 1 + Math.floor(Math.random() * this.users);
    const send: Send = { subject, sentAt: NaN };
    this.sends.push(send);
    this.inFlight++;
    const body = () => {
      send.sentAt = epochMs();
      return `m ${subject} ${seq} ${send.sentAt.toFixed(1)}`;
    };
    const answered = ({ status, body }: Answer) => {
      this.inFlight--;
      let id: number | undefined;
      try {
        id = status === 200 ? (JSON.parse(body) as { id?: number }).id : undefined;
      } catch {
        // not the API's JSON: an error like any other
      }
      if (id === undefined) return void this.errors++;
      send.id = id;
      send.ackedAt = epochMs();
      for (const user of this.recipients(subject)) this.ledgers[user].ack(seq);
    };
    this.api.request('POST', `/send/${subject}`, body, answered, () => {
      this.inFlight--;
      this.errors++;
    });
  }
}

/**
 * When the user's current stream, opened after `since`, held every message
 * acknowledged before it opened (its replay complete, and what was in flight);
 * undefined while it has no such stream or one is missing.
 */
function resumedAt(ledger: Ledger, sends: Send[], since: number): number | undefined {
  const welcome = ledger.welcomes.at(-1);
  if (welcome === undefined || welcome < since || (ledger.ends.at(-1) ?? 0) > welcome) return undefined;
  let done = welcome;
  for (const seq of ledger.acked) {
    if (sends[seq].ackedAt! > welcome) continue;
    const arrival = ledger.arrivals.get(seq);
    if (!arrival) return undefined;
    done = Math.max(done, arrival.at);
  }
  return done;
}

interface CpuSample {
  at: number;
  /** CPU seconds so far, by process name; a process that is gone is missing. */
  seconds: Map<string, number>;
  machine: MachineTicks;
  tcp: TcpCounters;
}

function sampleCpu(pids: Map<string, number>): CpuSample {
  const seconds = new Map<string, number>();
  for (const [name, pid] of pids) {
    try {
      seconds.set(name, cpuOf(pid));
    } catch {
      // killed: it has no figure for this window
    }
  }
  return { at: epochMs(), seconds, machine: machineTicks(), tcp: tcpCounters() };
}

/**
 * The kernel's TCP counters that show connections waiting (this network namespace, all processes): SYNs dropped
 * because a listener's accept queue was full, and SYNs sent again, which a client does 1 s, then 3 s, after its first.
 */
function tcpCounters() {
  const [names, values] = readFileSync('/proc/net/netstat', 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('TcpExt:'))
    .map((line) => line.split(/\s+/).slice(1));
  const get = (name: string) => Number(values[names.indexOf(name)] ?? NaN);
  return { listenOverflows: get('ListenOverflows'), listenDrops: get('ListenDrops'), synRetransmits: get('TCPSynRetrans') };
}
type TcpCounters = ReturnType<typeof tcpCounters>;

const ms = (sorted: number[], q: number) => +percentile(sorted, q).toFixed(1);
/** How many values, and their p50, p99 and max (ms). */
const percentiles = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return { count: sorted.length, p50: ms(sorted, 0.5), p99: ms(sorted, 0.99), max: ms(sorted, 1) };
};
/** The same of the times (epoch ms) that happened, counted from `since`. */
const sinceThen = (times: (number | undefined)[], since: number) => percentiles(times.filter((t): t is number => t !== undefined).map((t) => t - since));

export type StormReport = Awaited<ReturnType<typeof runStorm>>;

/** Who hears what: the run's users, and each subject's recipients in its friends graph and topics. */
interface Audience {
  users: number;
  isStorm: (user: number) => boolean;
  recipients: (subject: Subject) => Iterable<number>;
  hears: (user: number, subject: Subject) => boolean;
}

/** Writes the friends graph and the topics' subscriptions to a new store at `db`, and says who hears each subject. */
function audienceOf(o: StormOptions, db: string): Audience {
  const users = o.storm + o.calm;
  const subscribers = friends(db, users, o.follows, o.topics, o.seed);
  /** Each topic's recipients: the users whose streams listen to it, and its subscribers. */
  const hearTopic = new Map<string, Set<number>>();
  for (let user = 1; user <= users; user++)
    for (const topic of new Set([listensTo(user, o.topics), subscribesTo(user, o.topics)]))
      if (topic) hearTopic.set(topic, (hearTopic.get(topic) ?? new Set()).add(user));
  return {
    users,
    isStorm: (user) => user <= o.storm,
    recipients: (subject) => (typeof subject === 'number' ? [subject, ...subscribers[subject]] : (hearTopic.get(subject) ?? [])),
    hears: (user, subject) => (typeof subject === 'number' ? subject === user || subscribers[subject].includes(user) : (hearTopic.get(subject)?.has(user) ?? false)),
  };
}

/** The cluster as the run sees it once every stream is open. */
interface StormCluster {
  stats: () => Promise<RouterStats & { history: NonNullable<RouterStats['history']> }>;
  edges: ClusterProcess['edges'];
  capacities: number[];
  stormEdge: ClusterProcess['edges'][number];
  routerPid: number;
}

/** What the storm phase measured: the CPU samples around the baseline and the storm, and the router's history counts across it. */
interface StormWindows {
  baselineStart: CpuSample;
  baselineEnd: CpuSample;
  stormStart: CpuSample;
  stormEnd: CpuSample;
  killedAt: number;
  /** When the router had answered every storm client's replay (epoch ms), if it did within the timeout. */
  repliedAt?: number;
  historyBefore: NonNullable<RouterStats['history']>;
  historyAfter: NonNullable<RouterStats['history']>;
}

/** One run: what it started (the cluster, the client processes, the sender) and what their reports tell, user by user. */
class StormRun {
  readonly ledgers: Ledger[];
  private readonly totals = { storm: { refused: 0, failed: 0 }, calm: { refused: 0, failed: 0 } };
  /** Messages that reached a stream whose user does not hear their subject. */
  private misdelivered = 0;
  /** [arrival, latency] of each message to a calm stream, epoch ms and ms. */
  private readonly calmDeliveries: [number, number][] = [];
  private cluster?: ClusterProcess;
  private readonly clients: ClientProcess[] = [];
  private sender?: Sender;

  constructor(
    private readonly o: StormOptions,
    private readonly audience: Audience,
    private readonly log: (line: string) => void,
  ) {
    this.ledgers = Array.from({ length: audience.users + 1 }, () => new Ledger());
  }

  private readonly onEvents = (group: 'storm' | 'calm', e: ClientEvents): void => {
    const ledgers = this.ledgers;
    this.totals[group].refused += e.refused;
    this.totals[group].failed += e.failed;
    for (const [user, at] of e.welcomes) ledgers[user].welcomes.push(at);
    for (const [user, at] of e.ends) ledgers[user].ends.push(at);
    for (const user of e.lost) ledgers[user].lost++;
    for (const [user, id, seq, at] of e.messages) {
      const send = this.sender?.sends[seq];
      if (!send) continue;
      if (!this.audience.hears(user, send.subject)) this.misdelivered++;
      ledgers[user].receive(seq, id, at);
      if (!this.audience.isStorm(user)) this.calmDeliveries.push([at, at - send.sentAt]);
    }
  };

  /** Kills what the run started, at once (Ctrl-C). */
  kill(): void {
    for (const c of this.clients) c.child.kill('SIGKILL');
    this.cluster?.child.kill('SIGTERM');
  }

  /** Stops the sender, the client processes and the cluster, those that started. */
  async stop(): Promise<void> {
    await this.sender?.stop();
    await Promise.all(this.clients.map((c) => c.close()));
    if (this.cluster) await stopChild(this.cluster.child, 'SIGTERM', 15_000);
  }

  /** Starts the cluster on the store at `db` and opens every stream; resolves once the router sees them all, the storm group on its edge. */
  async start(db: string, perProcess: number): Promise<StormCluster> {
    const { o, log } = this;
    this.cluster = await spawnCluster(['--edges', String(o.edges), '--port-per-edge', '--db', db, '--log-level', 'warn']);
    const { apiPort, edges } = this.cluster;
    const capacities = edges.map((e) => e.capacity);
    const fits = doesNotFit(o, capacities);
    if (fits) throw new Error(fits);
    const stormEdge = edges[0];
    const routerPid = this.cluster.pids['router-0'];
    log(JSON.stringify({ msg: 'cluster up', edges: edges.map((e) => `${e.id} :${e.port} capacity ${e.capacity}`), apiPort, routerPid }));

    // Every stream starts as a resume from a real id, as a page that loaded its state as of that send would:
    // a stream that ends before its first message then resumes from it too, never from nothing.
    const { id: startId } = await post<{ id: number }>(apiPort, '/send/1', 'start');
    this.sender = new Sender(apiPort, this.audience.users, o.topics, o.topicShare, this.audience.recipients, this.ledgers);
    const t0 = performance.now();
    await this.openStreams(edges.map((e) => e.port!), String(startId), perProcess);
    // The storm's router keeps a history: its stats have one.
    const stats = async () => (await (await fetch(`http://${HOST}:${apiPort}/stats`)).json()) as RouterStats & { history: NonNullable<RouterStats['history']> };
    // Edges report their counts once a second, the directory its streams as presence arrives.
    await until(
      'the router to see every stream, the storm group on its edge',
      async () => {
        const s = await stats();
        return s.connections === this.audience.users && s.edges.find((e) => e.id === stormEdge.id)?.streams === o.storm ? true : undefined;
      },
      30_000,
      200,
    );
    log(JSON.stringify({ msg: 'streams open', storm: o.storm, calm: o.calm, clientProcesses: this.clients.length, seconds: +((performance.now() - t0) / 1000).toFixed(1) }));
    return { stats, edges, capacities, stormEdge, routerPid };
  }

  /** The storm group's streams on the first edge and the calm group's on the others, from client processes of `perProcess` streams. */
  private async openStreams(ports: number[], lastEventId: string, perProcess: number): Promise<void> {
    const o = this.o;
    const groups = [
      { group: 'storm' as const, first: 1, count: o.storm, ports: [ports[0]] },
      { group: 'calm' as const, first: o.storm + 1, count: o.calm, ports: ports.slice(1) },
    ];
    const opening: Promise<void>[] = [];
    for (const g of groups) {
      for (let first = g.first; first < g.first + g.count; first += perProcess) {
        const client = new ClientProcess(g.group, this.onEvents);
        this.clients.push(client);
        const count = Math.min(perProcess, g.first + g.count - first);
        opening.push(client.open({ first, count, ports: g.ports, reconnectPorts: ports.slice(1), lastEventId, sources: SOURCES, concurrency: 500, topics: o.topics }));
      }
    }
    await Promise.all(opening);
  }

  /** Sends through a warm-up and a baseline, kills the storm edge with kill -9, waits for its clients to resume, then for every acknowledged message. */
  async storm(c: StormCluster): Promise<StormWindows> {
    const { o, log } = this;
    const sender = this.sender!;
    const pids = new Map<string, number>([['router', c.routerPid], ['nats', this.cluster!.pids.nats]]);
    for (const e of c.edges) pids.set(e.id, e.pid);
    this.clients.forEach((client, i) => pids.set(`clients-${i}`, client.child.pid!));
    pids.set('runner', process.pid); // this process: the sender and every client's ledger
    await sender.start(o.rate, o.warmupSeconds + o.baselineSeconds + o.timeoutSeconds + o.afterSeconds + 10);
    await sleep(o.warmupSeconds * 1000);
    const baselineStart = sampleCpu(pids);
    await sleep(o.baselineSeconds * 1000);
    const baselineEnd = sampleCpu(pids);
    const historyBefore = (await c.stats()).history;

    // kill -9 the storm edge, checked against its command line so that no other process is hit.
    const { stormEdge } = c;
    const cmdline = readFileSync(`/proc/${stormEdge.pid}/cmdline`, 'utf8').split('\0');
    if (cmdline[cmdline.indexOf('--id') + 1] !== stormEdge.id) throw new Error(`pid ${stormEdge.pid} is not edge ${stormEdge.id}`);
    const stormStart = sampleCpu(pids);
    const killedAt = stormStart.at;
    process.kill(stormEdge.pid, 'SIGKILL');
    log(JSON.stringify({ msg: 'killed', edge: stormEdge.id, pid: stormEdge.pid, streams: o.storm }));

    const replied = this.everyReplayAnswered(c.stats, historyBefore.resumes, killedAt);
    const pending = await this.resumesPending(killedAt);
    const stormEnd = sampleCpu(pids);
    const repliedAt = await replied;
    const historyAfter = (await c.stats()).history;
    log(JSON.stringify({ msg: pending === 0 ? 'every storm client resumed' : 'timed out', pending, seconds: +((stormEnd.at - killedAt) / 1000).toFixed(2) }));

    await sleep(o.afterSeconds * 1000);
    await sender.stop();
    const missedNow = () => this.ledgers.reduce((n, l) => n + l.missed(), 0);
    await until('every acknowledged message to arrive', () => (missedNow() === 0 ? true : undefined), 5000, 100).catch(() => undefined);
    return { baselineStart, baselineEnd, stormStart, stormEnd, killedAt, repliedAt, historyBefore, historyAfter };
  }

  /** The server's side of it, without the clients' read lag: when the router had answered every storm client's replay (epoch ms); undefined past the timeout. */
  private async everyReplayAnswered(stats: StormCluster['stats'], resumesBefore: number, killedAt: number): Promise<number | undefined> {
    while (epochMs() - killedAt < this.o.timeoutSeconds * 1000) {
      if ((await stats()).history.resumes - resumesBefore >= this.o.storm) return epochMs();
      await sleep(50);
    }
    return undefined;
  }

  /** Waits, up to the timeout, for every storm client to resume (see resumedAt); returns how many did not. */
  private async resumesPending(killedAt: number): Promise<number> {
    const pending = new Set(Array.from({ length: this.o.storm }, (_, i) => i + 1));
    const sends = this.sender!.sends;
    await until(
      'every storm client to resume',
      () => {
        for (const user of pending) if (resumedAt(this.ledgers[user], sends, killedAt) !== undefined) pending.delete(user);
        return pending.size === 0 ? true : undefined;
      },
      this.o.timeoutSeconds * 1000,
      20,
    ).catch(() => undefined);
    return pending.size;
  }

  /** The report: the storm clients' resumes, every client's ledger, the sender's counts, and the two windows' CPU and latency. */
  report(c: StormCluster, w: StormWindows) {
    const { o } = this;
    const sender = this.sender!;
    const sends = sender.sends;
    return {
      scale: { storm: o.storm, calm: o.calm, edges: o.edges, edgeCapacities: c.capacities, rate: o.rate, follows: o.follows, topics: o.topics, topicShare: o.topics > 0 ? o.topicShare : 0, clientProcesses: this.clients.length, cores: cpus().length },
      storm: this.stormReport(c, w),
      ledger: this.ledgerReport(w.killedAt),
      sender: { sent: sends.length, toTopics: sends.filter((s) => typeof s.subject === 'string').length, acknowledged: sender.acked(), errors: sender.errors, skipped: sender.skipped },
      baseline: this.window(c, w.baselineStart, w.baselineEnd),
      duringStorm: this.window(c, w.stormStart, w.stormEnd),
    };
  }

  /** When each storm client resumed after the kill, and where the time went. */
  private stormReport(c: StormCluster, w: StormWindows) {
    const { o } = this;
    const { killedAt } = w;
    const resumeMs: number[] = [];
    for (let user = 1; user <= o.storm; user++) {
      const at = resumedAt(this.ledgers[user], this.sender!.sends, killedAt);
      if (at !== undefined) resumeMs.push(at - killedAt);
    }
    resumeMs.sort((a, b) => a - b);
    const storm = this.ledgers.slice(1, o.storm + 1);
    return {
      killedEdge: c.stormEdge.id,
      clients: o.storm,
      streamsEnded: storm.filter((l) => l.ends.some((at) => at >= killedAt)).length,
      resumed: resumeMs.length,
      resumedWithinTarget: resumeMs.filter((t) => t <= TARGET_MS).length,
      targetMs: TARGET_MS,
      resumeMs: { p50: ms(resumeMs, 0.5), p99: ms(resumeMs, 0.99), max: ms(resumeMs, 1) },
      // Where the time goes: the client seeing its stream end, then its welcome on another edge, then its replay.
      routerRepliedAllMs: w.repliedAt === undefined ? null : Math.round(w.repliedAt - killedAt),
      endedMs: sinceThen(storm.map((l) => l.ends.find((at) => at >= killedAt)), killedAt),
      welcomedMs: sinceThen(storm.map((l) => l.welcomes.find((at) => at >= killedAt)), killedAt),
      // How many had resumed by each time after the kill (ms): the backoff spreads first attempts over BACKOFF_MS.min, a dropped SYN goes again 1 s later.
      resumedBy: Object.fromEntries([500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 10_000].map((t) => [t, resumeMs.filter((r) => r <= t).length])),
      lastResumedMs: resumeMs.length === o.storm ? ms(resumeMs, 1) : null,
      reconnectedMoreThanOnce: storm.filter((l) => l.welcomes.filter((at) => at >= killedAt).length > 1).length,
      refused: this.totals.storm.refused,
      failedAttempts: this.totals.storm.failed,
      history: { resumes: w.historyAfter.resumes - w.historyBefore.resumes, replayed: w.historyAfter.replayed - w.historyBefore.replayed, lost: w.historyAfter.lost - w.historyBefore.lost },
    };
  }

  /** Every client's ledger over the whole run, with a few of the missed messages. */
  private ledgerReport(killedAt: number) {
    const sends = this.sender!.sends;
    let [missed, duplicated, outOfOrder, lost, addressed, wrongIds, unacknowledged] = [0, 0, 0, 0, 0, 0, 0];
    for (const l of this.ledgers) {
      missed += l.missed();
      duplicated += l.duplicated;
      outOfOrder += l.outOfOrder;
      lost += l.lost;
      addressed += l.acked.length;
      for (const [seq, { id }] of l.arrivals) {
        if (sends[seq].id === undefined) unacknowledged++;
        else if (sends[seq].id !== id) wrongIds++;
      }
    }
    return {
      addressed,
      missed,
      duplicated,
      outOfOrder,
      lost,
      misdelivered: this.misdelivered,
      wrongIds,
      unacknowledgedReceived: unacknowledged,
      calmRefused: this.totals.calm.refused,
      calmFailedAttempts: this.totals.calm.failed,
      calmStreamsEnded: this.ledgers.slice(this.o.storm + 1).reduce((n, l) => n + l.ends.length, 0),
      missedExamples: this.missedExamples(killedAt),
    };
  }

  /** A few of the missed, with what their user's streams did, ms from the kill: enough to start looking. */
  private missedExamples(killedAt: number) {
    const sends = this.sender!.sends;
    const fromKill = (at: number) => Math.round(at - killedAt);
    return this.ledgers
      .flatMap((l, user) => l.acked.filter((seq) => !l.arrivals.has(seq)).map((seq) => ({ user, l, seq })))
      .slice(0, 5)
      .map(({ user, l, seq }) => ({
        user,
        group: this.audience.isStorm(user) ? 'storm' : 'calm',
        seq,
        id: sends[seq].id,
        subject: sends[seq].subject,
        sentMs: fromKill(sends[seq].sentAt),
        ackedMs: fromKill(sends[seq].ackedAt!),
        welcomesMs: l.welcomes.map(fromKill),
        endsMs: l.ends.map(fromKill),
        // Later messages on the same streams: a gap, not a stream that stopped; the other recipients: whether the send went out at all.
        laterReceived: [...l.arrivals.values()].filter((a) => a.id > sends[seq].id!).length,
        otherRecipientsReceived: [...this.audience.recipients(sends[seq].subject)].filter((u) => u !== user && this.ledgers[u].arrivals.has(seq)).length,
      }));
  }

  /** Between two samples: each process's CPU, the acknowledged sends, the TCP counters and the calm streams' delivery latency. */
  private window(c: StormCluster, a: CpuSample, b: CpuSample) {
    const seconds = (b.at - a.at) / 1000;
    const sent = this.sender!.acked(a.at, b.at);
    const cores = (name: string) => {
      const [x, y] = [a.seconds.get(name), b.seconds.get(name)];
      return x === undefined || y === undefined ? null : +((y - x) / seconds).toFixed(3);
    };
    const cpuSeconds = (name: string) => (b.seconds.get(name) ?? 0) - (a.seconds.get(name) ?? 0);
    return {
      seconds: +seconds.toFixed(2),
      acknowledgedSends: sent,
      router: { cores: cores('router'), microsPerSend: sent ? Math.round((cpuSeconds('router') * 1e6) / sent) : null },
      nats: { cores: cores('nats') },
      edges: Object.fromEntries(c.edges.map((e) => [e.id, cores(e.id)])),
      clientsCores: +this.clients.reduce((n, _, i) => n + (cores(`clients-${i}`) ?? 0), 0).toFixed(3),
      runnerCores: cores('runner'),
      machine: machineCores(a.machine, b.machine),
      tcp: Object.fromEntries(Object.entries(b.tcp).map(([k, v]) => [k, v - a.tcp[k as keyof TcpCounters]])) as TcpCounters,
      calmLatencyMs: percentiles(this.calmDeliveries.filter(([at]) => at >= a.at && at <= b.at).map(([, l]) => l)),
    };
  }
}

/** Starts the cluster and the clients, kills the storm edge while sends flow, stops everything it started; resolves with the report. */
export async function runStorm(o: StormOptions) {
  const perProcess = Math.min(o.perProcess, openFileLimit() - CLIENT_SPARE_FDS);
  const tooBig = doesNotFit(o, Array(o.edges).fill(streamCapacity()));
  if (tooBig) throw new Error(tooBig);
  if (perProcess < 1) throw new Error(`the open-file limit (${openFileLimit()}) leaves no room for streams in a client process`);

  const dir = mkdtempSync(join(tmpdir(), 'c1m-storm-'));
  const db = join(dir, 'c1m.db');
  const run = new StormRun(o, audienceOf(o, db), o.log ?? ((line: string) => console.log(line)));
  // Ctrl-C reaches the cluster and the client processes too; what is left is this run's directory.
  const onSigint = () => {
    run.kill();
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  try {
    const cluster = await run.start(db, perProcess);
    const windows = await run.storm(cluster);
    return run.report(cluster, windows);
  } finally {
    process.off('SIGINT', onSigint);
    await run.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function summary(r: StormReport): string {
  const s = r.storm;
  const w = (name: string, x: StormReport['baseline']) =>
    `${name}: ${x.seconds} s, ${x.acknowledgedSends} sends; router ${x.router.cores} cores, ${x.router.microsPerSend} µs/send; nats ${x.nats.cores}; ` +
    `edges ${Object.entries(x.edges).map(([id, c]) => `${id} ${c ?? 'killed'}`).join(', ')}; clients ${x.clientsCores}; runner (sender, ledgers) ${x.runnerCores}; machine busy ${x.machine.busy} of ${r.scale.cores} cores; ` +
    `listen queue overflows ${x.tcp.listenOverflows}, SYNs sent again ${x.tcp.synRetransmits}; ` +
    `calm delivery p50 ${x.calmLatencyMs.p50} ms p99 ${x.calmLatencyMs.p99} ms (${x.calmLatencyMs.count})`;
  return [
    `storm: ${s.clients} streams on ${s.killedEdge} killed, ${s.streamsEnded} ended; ${s.resumed} resumed, ${s.resumedWithinTarget} within ${s.targetMs} ms; ` +
      `resume p50 ${s.resumeMs.p50} ms, p99 ${s.resumeMs.p99} ms, last ${s.lastResumedMs ?? 'never (timed out)'} ms; ` +
      `end seen p50/p99/max ${s.endedMs.p50}/${s.endedMs.p99}/${s.endedMs.max} ms, welcome ${s.welcomedMs.p50}/${s.welcomedMs.p99}/${s.welcomedMs.max} ms; ` +
      `the router had answered every replay ${s.routerRepliedAllMs ?? 'never'} ms after the kill; ` +
      `resumed by (ms) ${Object.entries(s.resumedBy).map(([t, n]) => `${t}: ${n}`).join(', ')}; ` +
      `${s.history.resumes} resumes replayed ${s.history.replayed} messages; ${s.refused} refused, ${s.failedAttempts} failed attempts`,
    `ledger (${r.ledger.addressed} acknowledged deliveries): missed ${r.ledger.missed}, duplicated ${r.ledger.duplicated}, out of order ${r.ledger.outOfOrder}, lost ${r.ledger.lost}, misdelivered ${r.ledger.misdelivered}, wrong ids ${r.ledger.wrongIds}`,
    w('baseline', r.baseline),
    w('storm', r.duringStorm),
  ].join('\n');
}

async function main(): Promise<void> {
  const opts = new Command('bench-storm')
    .addOption(new Option('--storm <n>', 'streams on the edge that is killed (default: what one edge takes, from the open-file limit)').argParser(Number))
    .addOption(new Option('--calm <n>', 'streams on the other edges').default(STORM_DEFAULTS.calm).argParser(Number))
    .addOption(new Option('--edges <n>', 'edges in the cluster').default(STORM_DEFAULTS.edges).argParser(Number))
    .addOption(new Option('--rate <n>', 'sends per second, to random users').default(STORM_DEFAULTS.rate).argParser(Number))
    .addOption(new Option('--follows <n>', 'others each user follows').default(STORM_DEFAULTS.follows).argParser(Number))
    .addOption(new Option('--topics <n>', 'topics room:1..n: every second stream listens to one, every third user subscribes to one').default(STORM_DEFAULTS.topics).argParser(Number))
    .addOption(new Option('--topic-share <x>', 'the share of sends to a random topic (with --topics)').default(STORM_DEFAULTS.topicShare).argParser(Number))
    .addOption(new Option('--warmup <s>', 'seconds of sends before the baseline').default(STORM_DEFAULTS.warmupSeconds).argParser(Number))
    .addOption(new Option('--baseline <s>', 'seconds of the baseline window').default(STORM_DEFAULTS.baselineSeconds).argParser(Number))
    .addOption(new Option('--timeout <s>', 'longest wait for every storm client to resume').default(STORM_DEFAULTS.timeoutSeconds).argParser(Number))
    .addOption(new Option('--after <s>', 'seconds of sends after the last resume').default(STORM_DEFAULTS.afterSeconds).argParser(Number))
    .addOption(new Option('--per-process <n>', 'streams per client process').default(STORM_DEFAULTS.perProcess).argParser(Number))
    .addOption(new Option('--seed <n>', "the friends graph's seed").default(STORM_DEFAULTS.seed).argParser(Number))
    .parse()
    .opts<{ storm?: number; calm: number; edges: number; rate: number; follows: number; topics: number; topicShare: number; warmup: number; baseline: number; timeout: number; after: number; perProcess: number; seed: number }>();
  const report = await runStorm({
    ...opts,
    storm: opts.storm ?? defaultStorm(),
    warmupSeconds: opts.warmup,
    baselineSeconds: opts.baseline,
    timeoutSeconds: opts.timeout,
    afterSeconds: opts.after,
  });
  console.log(JSON.stringify(report, null, 1));
  console.log(summary(report));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (err: Error) => {
      console.error(`storm: ${err.stack ?? err.message}`);
      process.exit(1);
    },
  );
}
