/**
 * An edge: a dumb, fast pool of comet streams, like the original's libevent C
 * node. It holds streams, reports who logged in and out to the routers over
 * the bus, and writes what the routers tell it to. No store, no backend API.
 * Many edges share one public port (SO_REUSEPORT); an edge that fills up
 * stops listening so the kernel hands new connections to the others.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { Bus } from '../cluster/bus.js';
import { MIN_WINDOW_MS, SUBJECTS, type BusMessage, type EdgeState, type EdgeStats } from '../cluster/messages.js';
import { Registry } from '../router/registry.js';
import { cometRoutes } from './comet.js';
import { LatencyHistogram } from './latency.js';
import { FdGuard, openFileLimit, RESERVED_FDS } from './limits.js';
import { listen, listenNow } from './listen.js';
import { StreamHub } from './stream.js';
import { loadNativeUws, type us_listen_socket } from './uws.js';

export interface EdgeOptions {
  /** NATS server URL(s), comma-separated. */
  nats: string;
  /** Unique in the cluster and stable across restarts (a subject token: letters, digits, - and _). */
  id: string;
  host?: string;
  port: number;
  maxConnections?: number;
  maxUserId?: number;
  maxBacklog?: number;
  maxStreamsPerUser?: number;
  /** Seconds between heartbeat lines on every stream (0: none); see StreamHub. */
  heartbeatSeconds?: number;
  contentType?: 'text' | 'html';
  /** When set, /test/<id> needs a token signed with it (c1m token). */
  streamSecret?: string;
  /** Serve HAProxy's agent check on this TCP port (same host). */
  agentPort?: number;
  /** Streams closed per second while draining. Default 1,000. */
  drainRate?: number;
  /** Presence changes are batched for this long before they go to the routers (ms). Default MIN_WINDOW_MS; `c1m cluster` passes busWindowMs(its edges). */
  presenceMs?: number;
  /** Heartbeat period. Default 1,000 ms. */
  heartbeatMs?: number;
  logger: Logger;
}

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

/** Streams per snapshot message: well under NATS's default 1 MB payload. */
const STATE_PART = 50_000;

export async function startEdge(options: EdgeOptions): Promise<Edge> {
  const uws = loadNativeUws();
  const log = options.logger;
  const host = options.host ?? '0.0.0.0';
  const capacity = options.maxConnections ?? Math.max(1, openFileLimit() - RESERVED_FDS);
  // Stop listening a little before capacity: sockets accepted just before the pause still fit.
  const margin = Math.max(1, Math.ceil(capacity * 0.01));
  const pauseAt = capacity - margin;
  const resumeAt = Math.max(0, capacity - 3 * margin);
  const boot = `${process.pid}-${Date.now().toString(36)}`;
  let state: EdgeState = 'up';
  let drainRate = options.drainRate ?? 1000;
  let seq = 0;
  let ins: number[] = [];
  let outs: number[] = [];
  let presenceTimer: NodeJS.Timeout | undefined;

  const bus = await Bus.connect(options.nats, `c1m-edge-${options.id}`, {
    // Routers may have dropped this edge during the outage; they ask for a snapshot when they hear it again.
    reconnected: () => log.warn('reconnected to NATS'),
    malformed: (subject, err) => log.warn({ subject, err: err.message }, 'malformed bus message'),
    warning: (message) => log.warn(message),
  });

  const flushPresence = (): void => {
    presenceTimer = undefined;
    if (ins.length === 0 && outs.length === 0) return;
    bus.publish(SUBJECTS.presence, { t: 'presence', edge: options.id, boot, seq: ++seq, in: ins, out: outs });
    ins = [];
    outs = [];
  };
  const presenceChanged = (): void => {
    presenceTimer ??= setTimeout(flushPresence, options.presenceMs ?? MIN_WINDOW_MS);
  };

  const registry = new Registry(options.maxStreamsPerUser ?? 16, {
    login(user) {
      ins.push(user);
      presenceChanged();
      if (state === 'up' && registry.connections >= pauseAt) pause('full');
    },
    logout(user) {
      outs.push(user);
      presenceChanged();
      if (state === 'full' && registry.connections <= resumeAt) resume();
    },
  });
  const hub = new StreamHub(registry, options.maxBacklog ?? 256 * 1024, options.heartbeatSeconds ?? 0);
  const latency = new LatencyHistogram();
  hub.onWritten = latency.observe;
  const app = cometRoutes(uws.App(), hub, {
    maxUserId: options.maxUserId ?? 1_000_000,
    maxConnections: capacity,
    contentType: options.contentType,
    streamSecret: options.streamSecret,
  });

  let listener: us_listen_socket | null = null;
  let port = options.port;
  /**
   * Listens exactly when the edge is up and has descriptors to spare. Closing a
   * listener resets the connections waiting in its accept queue unless
   * net.ipv4.tcp_migrate_req=1 hands them to the other listeners on the port.
   * Returns false when listening again failed (then FdGuard retries).
   */
  const reconcileListener = (): boolean => {
    const wanted = state === 'up' && !fds.paused;
    if (!wanted && listener) {
      uws.us_listen_socket_close(listener);
      listener = null;
      log.info({ streams: registry.connections, capacity, state, outOfFds: fds.paused }, 'stopped accepting');
    } else if (wanted && !listener) {
      listener = listenNow(app, host, port);
      if (!listener) log.error({ port }, 'cannot listen again; retrying');
      else log.info({ streams: registry.connections, capacity }, 'accepting again');
    }
    fds.watch(wanted);
    return !wanted || listener !== null;
  };
  const pause = (next: EdgeState): void => {
    state = next;
    reconcileListener();
  };
  const resume = (): void => {
    state = 'up';
    reconcileListener();
  };
  // uSockets retries accept() on EMFILE at 100% CPU: stop accepting before the process runs out.
  const fds = new FdGuard(reconcileListener, reconcileListener);

  const stats = (): EdgeStats => ({
    pid: process.pid,
    state,
    streams: registry.connections,
    capacity,
    chunks: hub.chunks,
    bytes: hub.bytes,
    slowConsumerCloses: hub.slowConsumerCloses,
    authFailures: hub.authFailures,
    rss: process.memoryUsage.rss(),
  });
  const heartbeat = (subject: string = SUBJECTS.presence): void => {
    bus.publish(subject, { t: 'heartbeat', edge: options.id, boot, seq, stats: stats(), latency });
  };

  /** Full state for a router: pending presence first, so the snapshot is exactly as of `seq`. */
  const sendState = (replyTo: string): void => {
    clearTimeout(presenceTimer);
    flushPresence();
    const users = registry.everyConnectionUser();
    const parts = Math.max(1, Math.ceil(users.length / STATE_PART));
    for (let part = 0; part < parts; part++) {
      const slice = users.slice(part * STATE_PART, (part + 1) * STATE_PART);
      bus.publish(replyTo, { t: 'state', edge: options.id, boot, seq, part, last: part === parts - 1, users: slice, stats: stats() });
    }
  };

  const deliver = (message: Extract<BusMessage, { t: 'deliver' }>): void => {
    const { chunks, targets, sentAt } = message;
    for (let i = 0; i < chunks.length; i++) {
      const chunk = chunks[i] as Buffer; // msgpackr decodes binary as Buffer on Node
      for (const user of targets[i]) registry.deliver(user, chunk);
      hub.noteSend(sentAt[i]);
    }
  };

  let drainTimer: NodeJS.Timeout | undefined;
  let stopping: Promise<void> | undefined;
  const drain = (rate = drainRate): void => {
    drainRate = rate;
    if (state !== 'draining' && state !== 'stopping') pause('draining');
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
    resume();
  };

  const onEdgeMessage = (message: BusMessage, replyTo: string | undefined): void => {
    switch (message.t) {
      case 'deliver':
        return deliver(message);
      case 'sync':
        if (replyTo) sendState(replyTo);
        return;
      case 'drain':
      case 'undrain':
        if (message.t === 'drain') drain(message.rate);
        else undrain();
        if (replyTo) heartbeat(replyTo); // the admin command prints the edge's new state
        return;
      default:
        log.warn({ t: message.t }, 'unexpected bus message');
    }
  };
  bus.subscribe(SUBJECTS.edge(options.id), onEdgeMessage);
  bus.subscribe(SUBJECTS.sync, onEdgeMessage);

  ({ socket: listener, port } = listen(uws, app, host, port, `edge ${options.id}'s streams`));
  const agent = options.agentPort === undefined ? undefined : await agentServer(host, options.agentPort, () => agentReply(state, registry.connections, capacity, pauseAt));
  const heartbeatTimer = setInterval(() => heartbeat(), options.heartbeatMs ?? 1000);
  heartbeat();
  // At info whatever the log level: the supervisor waits for this line.
  log.child({}, { level: 'info' }).info({ id: options.id, port, capacity, nats: bus.server, agentPort: agent?.port, pid: process.pid }, 'c1m edge listening');

  return {
    id: options.id,
    port,
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

  async function finish(now: boolean): Promise<void> {
    if (now) registry.closeAll();
    else if (registry.connections > 0) {
      drain();
      await new Promise<void>((resolve) => {
        const check = setInterval(() => registry.connections === 0 && (clearInterval(check), resolve()), 50);
      });
    }
    clearInterval(drainTimer);
    clearInterval(heartbeatTimer);
    state = 'stopping';
    reconcileListener();
    fds.close();
    hub.close();
    clearTimeout(presenceTimer);
    flushPresence();
    heartbeat(); // routers forget this edge now, not at the heartbeat timeout
    agent?.close();
    await bus.close();
    log.info({ id: options.id }, 'c1m edge stopped');
  }
}

/**
 * HAProxy's agent check. While accepting: free capacity as a weight, `ready` (it lifts a drain or
 * maint HAProxy saw earlier, which it otherwise keeps for good) and `maxconn:` the count at which
 * this edge stops listening, so HAProxy never sends it a stream it would refuse. `drain` when full
 * or draining (no new streams, keep the open ones), `maint` when stopping.
 */
function agentReply(state: EdgeState, streams: number, capacity: number, limit: number): string {
  if (state === 'up') return `up ready ${Math.max(1, Math.floor((100 * (capacity - streams)) / capacity))}% maxconn:${limit}\n`;
  return state === 'stopping' ? 'maint\n' : 'drain\n';
}

function agentServer(host: string, port: number, reply: () => string): Promise<net.Server & { port: number }> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.end(reply());
    });
    server.once('error', reject);
    server.listen(port, host, () => resolve(Object.assign(server, { port: (server.address() as net.AddressInfo).port })));
  });
}
