/**
 * An edge: a dumb, fast pool of comet streams, like the original's libevent C
 * node. It holds streams, reports who logged in and out to the routers over
 * the bus (./presence.ts), and writes what the routers tell it to. No store,
 * no backend API. Many edges share one public port (SO_REUSEPORT); an edge
 * that fills up stops listening so the kernel hands new connections to the
 * others.
 */
import type { Logger } from 'pino';
import { Registry } from '../router/registry.js';
import { checkStreamSecret } from '../server/auth.js';
import { DEFAULTS, MIN_WINDOW_MS } from '../server/defaults.js';
import { pausesAt, streamCapacity } from '../server/limits.js';
import { assertPortFree, PublicListener } from '../server/listener.js';
import type { OptionsOf } from '../server/options.js';
import { publicStreams } from '../server/serving.js';
import { transportStats, type StreamHub } from '../server/stream.js';
import { loadNativeUws } from '../server/uws.js';
import { agentReply, agentServer } from './agent.js';
import type { Bus } from './bus.js';
import { CLUSTER_DEFAULTS } from './defaults.js';
import { Deliveries } from './deliveries.js';
import { SUBJECTS, type BusMessage, type EdgeState, type EdgeStats } from './messages.js';
import { PresenceReporter } from './presence.js';
import { busReplayer } from './replayer.js';

/**
 * startEdge()'s options: those of `c1m edge` under their resolved names (server/options.ts), every one optional, but
 * for the few its command line resolves first (the bus, the id), and what only a caller gives.
 */
export type EdgeOptions = Partial<Omit<OptionsOf<'edge'>, 'id' | 'nats' | 'natsCreds' | 'natsCa' | 'busInsecure' | 'sharePort' | 'logLevel'>> & {
  /** Its connection to the routers (NatsBus in a cluster). */
  bus: Bus;
  /** Unique in the cluster and stable across restarts (a subject token: letters, digits, - and _). */
  id: string;
  /**
   * Refuse a port another process listens on (default true): uWS listens with SO_REUSEPORT, so
   * the edge would otherwise share it silently. False only to join sibling edges already on it.
   */
  exclusivePort?: boolean;
  /** How often the edge tells the routers it is alive (ms). */
  statusMs?: number;
  logger: Logger;
};

export interface Edge {
  readonly id: string;
  readonly port: number;
  readonly agentPort?: number;
  state(): EdgeState;
  stats(): EdgeStats;
  drain(rate?: number): void;
  undrain(): void;
  /** Drains at the drain rate (or closes everything at once with `now`), tells the routers, disconnects. */
  stop(now?: boolean): Promise<void>;
}

export async function startEdge(options: EdgeOptions): Promise<Edge> {
  checkStreamSecret(options.streamSecret);
  const uws = loadNativeUws();
  const { bus, logger: log } = options;
  const host = options.host ?? DEFAULTS.host;
  const port = options.port ?? DEFAULTS.port;
  if (options.exclusivePort ?? true) await assertPortFree(host, port, `edge ${options.id}'s streams`);
  const admission = new Admission(options.maxConnections ?? streamCapacity());
  const { capacity, pauseAt } = admission;
  const registry = new Registry(options.maxStreamsPerUser ?? DEFAULTS.maxStreamsPerUser, {
    login(subject) {
      presence.login(subject);
      admission.loggedIn(registry.connections);
    },
    logout(subject) {
      presence.logout(subject);
      admission.loggedOut(registry.connections);
    },
  });
  const { hub, latency, app } = publicStreams(uws, registry, capacity, options);
  const stats = edgeStats(admission, registry, hub);
  const presence = new PresenceReporter(bus, options.id, `${process.pid}-${Date.now().toString(36)}`, stats, latency, options.presenceMs ?? MIN_WINDOW_MS);
  // The history is a router's: a resuming stream's replay comes over the bus (see server/resume.ts).
  hub.replay = busReplayer(bus, hub, loginsSender(presence));
  const drainer = new Drainer(admission, registry, options.drainRate ?? DEFAULTS.drainRate, log);
  subscribeToBus(bus, options.id, { deliveries: new Deliveries(registry, hub, log), hub, presence, registry, drainer, log });

  const listener = (admission.listener = new PublicListener(uws, app, host, port, `edge ${options.id}'s streams`, log, () => registry.connections));
  const agent = options.agentPort === undefined ? undefined : await agentServer(host, options.agentPort, () => agentReply(admission.state, registry.connections, capacity, pauseAt));
  const statusTimer = setInterval(() => presence.status(), options.statusMs ?? CLUSTER_DEFAULTS.statusMs);
  presence.status();
  // At info whatever the log level: the supervisor waits for this line.
  log.child({}, { level: 'info' }).info({ id: options.id, port: listener.port, capacity, streamAuth: options.streamSecret !== undefined, nats: bus.server, agentPort: agent?.port, pid: process.pid }, 'c1m edge listening');

  let stopping: Promise<void> | undefined;
  const finish = async (now: boolean): Promise<void> => {
    if (now) registry.closeAll();
    else if (registry.connections > 0) {
      drainer.drain();
      await new Promise<void>((resolve) => {
        const check = setInterval(() => registry.connections === 0 && (clearInterval(check), resolve()), 50);
      });
    }
    drainer.stop();
    clearInterval(statusTimer);
    admission.state = 'stopping';
    listener.close();
    hub.close();
    presence.close();
    presence.status(); // routers forget this edge now, not at the edge timeout
    agent?.close();
    await bus.close();
    log.info({ id: options.id }, 'c1m edge stopped');
  };

  return {
    id: options.id,
    port: listener.port,
    agentPort: agent?.port,
    state: () => admission.state,
    stats,
    drain: drainer.drain,
    undrain: drainer.undrain,
    stop(now = false) {
      // Ctrl-C reaches a whole process group: the supervisor's own signal may follow the terminal's.
      stopping ??= finish(now);
      return stopping;
    },
  };
}

/** What the edge tells the routers in its status (and /stats shows of it). */
const edgeStats =
  (admission: Admission, registry: Registry, hub: StreamHub) =>
  (): EdgeStats => ({
    pid: process.pid,
    state: admission.state,
    streams: registry.connections,
    capacity: admission.capacity,
    chunks: hub.chunks,
    bytes: hub.bytes,
    slowConsumerCloses: hub.slowConsumerCloses,
    authFailures: hub.authFailures,
    transports: transportStats(hub),
    rss: process.memoryUsage.rss(),
  });

/**
 * Whether the edge takes new streams. Full at pausesAt(capacity), it stops listening, so that the kernel hands new
 * connections to its siblings, and listens again well below; draining or stopping, it does not listen.
 */
class Admission {
  state: EdgeState = 'up';
  /** Listens only while up; set once listening. */
  listener: PublicListener | undefined;
  readonly pauseAt: number;
  private readonly resumeAt: number;

  constructor(readonly capacity: number) {
    this.pauseAt = pausesAt(capacity);
    this.resumeAt = Math.max(0, capacity - 3 * (capacity - this.pauseAt));
  }

  set(next: EdgeState): void {
    this.state = next;
    this.listener?.want(next === 'up');
  }

  loggedIn(streams: number): void {
    if (this.state === 'up' && streams >= this.pauseAt) this.set('full');
  }

  loggedOut(streams: number): void {
    if (this.state === 'full' && streams <= this.resumeAt) this.set('up');
  }
}

/** Closes the edge's streams at the drain rate (c1m admin drain, or a stop), so that their clients reconnect elsewhere at an even pace. */
class Drainer {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly admission: Admission,
    private readonly registry: Registry,
    private rate: number,
    private readonly log: Logger,
  ) {}

  readonly drain = (rate = this.rate): void => {
    this.rate = rate;
    if (this.admission.state !== 'draining' && this.admission.state !== 'stopping') this.admission.set('draining');
    clearInterval(this.timer);
    // Ten rounds a second.
    this.timer = setInterval(() => {
      if (this.registry.connections === 0) return clearInterval(this.timer);
      this.registry.closeSome(Math.max(1, Math.round(this.rate / 10)));
    }, 100);
    this.log.info({ rate, streams: this.registry.connections }, 'draining');
  };

  readonly undrain = (): void => {
    if (this.admission.state !== 'draining') return;
    clearInterval(this.timer);
    this.admission.set('up');
  };

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * Sends the pending logins at the end of this turn, once for all the streams that resume in it (a reconnect storm
 * brings thousands): a resuming stream's replay is asked for once they are out, so that the router has the stream's
 * login before it reads the replay.
 */
function loginsSender(presence: PresenceReporter): () => Promise<void> {
  let loginsOut: Promise<void> | undefined;
  return () =>
    (loginsOut ??= new Promise((resolve) =>
      setImmediate(() => {
        loginsOut = undefined;
        presence.flush();
        resolve();
      }),
    ));
}

/** What the routers (deliveries, syncs) and the admins (drain, undrain) send this edge. */
function subscribeToBus(
  bus: Bus,
  id: string,
  edge: { deliveries: Deliveries; hub: StreamHub; presence: PresenceReporter; registry: Registry; drainer: Drainer; log: Logger },
): void {
  const { deliveries, hub, presence, registry, drainer, log } = edge;
  // Each subject takes only its own messages: nats-server lets routers publish to c1m.edge.* and admins to c1m.admin.*.
  const onEdgeMessage = (message: BusMessage): void => {
    switch (message.t) {
      case 'deliver':
        return deliveries.batch(message);
      case 'stopped':
        return deliveries.stopped(message);
      case 'sync':
        // The routers say how many partitions number the messages: with several, each stream keeps an id per partition.
        hub.partitions = message.partitions ?? 1;
        return presence.snapshot([...registry.everyConnectionUser(), ...registry.everyListeningTopic()]);
      default:
        log.warn({ t: message.t }, 'unexpected bus message');
    }
  };
  const onAdminMessage = (message: BusMessage, replyTo: string | undefined): void => {
    if (message.t === 'drain') drainer.drain(message.rate);
    else if (message.t === 'undrain') drainer.undrain();
    else return void log.warn({ t: message.t }, 'unexpected admin message');
    if (replyTo) presence.status(replyTo); // the admin command prints the edge's new state
  };
  bus.subscribe(SUBJECTS.edge(id), onEdgeMessage);
  bus.subscribe(SUBJECTS.sync, onEdgeMessage);
  bus.subscribe(SUBJECTS.admin(id), onAdminMessage);
}
