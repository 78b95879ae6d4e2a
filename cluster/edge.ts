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
import { transportStats } from '../server/stream.js';
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
  const capacity = options.maxConnections ?? streamCapacity();
  const pauseAt = pausesAt(capacity);
  const resumeAt = Math.max(0, capacity - 3 * (capacity - pauseAt));
  let state: EdgeState = 'up';
  let listener: PublicListener | undefined;
  const setState = (next: EdgeState): void => {
    state = next;
    listener?.want(state === 'up');
  };

  const stats = (): EdgeStats => ({
    pid: process.pid,
    state,
    streams: registry.connections,
    capacity,
    chunks: hub.chunks,
    bytes: hub.bytes,
    slowConsumerCloses: hub.slowConsumerCloses,
    authFailures: hub.authFailures,
    transports: transportStats(hub),
    rss: process.memoryUsage.rss(),
  });
  const registry = new Registry(options.maxStreamsPerUser ?? DEFAULTS.maxStreamsPerUser, {
    login(subject) {
      presence.login(subject);
      if (state === 'up' && registry.connections >= pauseAt) setState('full');
    },
    logout(subject) {
      presence.logout(subject);
      if (state === 'full' && registry.connections <= resumeAt) setState('up');
    },
  });
  const { hub, latency, app } = publicStreams(uws, registry, capacity, options);
  const presence = new PresenceReporter(bus, options.id, `${process.pid}-${Date.now().toString(36)}`, stats, latency, options.presenceMs ?? MIN_WINDOW_MS);
  // The history is a router's: a resuming stream's replay comes over the bus (see server/resume.ts), asked for once
  // this edge's pending logins are out, so that the router has the stream's before it reads the replay.
  let loginsOut: Promise<void> | undefined;
  /** Sends the pending logins at the end of this turn, once for all the streams that resume in it (a reconnect storm brings thousands). */
  const sendLogins = (): Promise<void> =>
    (loginsOut ??= new Promise((resolve) =>
      setImmediate(() => {
        loginsOut = undefined;
        presence.flush();
        resolve();
      }),
    ));
  hub.replay = busReplayer(bus, hub, sendLogins);

  const deliveries = new Deliveries(registry, hub, log);

  let drainRate = options.drainRate ?? DEFAULTS.drainRate;
  let drainTimer: NodeJS.Timeout | undefined;
  const drain = (rate = drainRate): void => {
    drainRate = rate;
    if (state !== 'draining' && state !== 'stopping') setState('draining');
    clearInterval(drainTimer);
    // Ten rounds a second, so clients reconnect elsewhere at an even pace.
    drainTimer = setInterval(() => {
      if (registry.connections === 0) return clearInterval(drainTimer);
      registry.closeSome(Math.max(1, Math.round(drainRate / 10)));
    }, 100);
    log.info({ rate, streams: registry.connections }, 'draining');
  };
  const undrain = (): void => {
    if (state !== 'draining') return;
    clearInterval(drainTimer);
    setState('up');
  };

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
    if (message.t === 'drain') drain(message.rate);
    else if (message.t === 'undrain') undrain();
    else return void log.warn({ t: message.t }, 'unexpected admin message');
    if (replyTo) presence.status(replyTo); // the admin command prints the edge's new state
  };
  bus.subscribe(SUBJECTS.edge(options.id), onEdgeMessage);
  bus.subscribe(SUBJECTS.sync, onEdgeMessage);
  bus.subscribe(SUBJECTS.admin(options.id), onAdminMessage);

  listener = new PublicListener(uws, app, host, port, `edge ${options.id}'s streams`, log, () => registry.connections);
  const agent = options.agentPort === undefined ? undefined : await agentServer(host, options.agentPort, () => agentReply(state, registry.connections, capacity, pauseAt));
  const statusTimer = setInterval(() => presence.status(), options.statusMs ?? CLUSTER_DEFAULTS.statusMs);
  presence.status();
  // At info whatever the log level: the supervisor waits for this line.
  log.child({}, { level: 'info' }).info({ id: options.id, port: listener.port, capacity, streamAuth: options.streamSecret !== undefined, nats: bus.server, agentPort: agent?.port, pid: process.pid }, 'c1m edge listening');

  let stopping: Promise<void> | undefined;
  const finish = async (now: boolean): Promise<void> => {
    if (now) registry.closeAll();
    else if (registry.connections > 0) {
      drain();
      await new Promise<void>((resolve) => {
        const check = setInterval(() => registry.connections === 0 && (clearInterval(check), resolve()), 50);
      });
    }
    clearInterval(drainTimer);
    clearInterval(statusTimer);
    state = 'stopping';
    listener!.close();
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
    state: () => state,
    stats,
    drain,
    undrain,
    stop(now = false) {
      // Ctrl-C reaches a whole process group: the supervisor's own signal may follow the terminal's.
      stopping ??= finish(now);
      return stopping;
    },
  };
}
