/**
 * Every message that travels between c1m processes over the bus, as one
 * discriminated union, and its msgpack encoding. Edges hold streams; routers
 * hold the directory (which edge holds whose streams) and the store.
 *
 *   edge   ──presence, status, state──▶ c1m.presence.<id> (every router; state: a full snapshot, in parts)
 *   router ──sync──▶ c1m.sync (every edge) or c1m.edge.<id> (one)
 *   router ──deliver──▶ c1m.edge.<id>                    (batched per edge)
 *   admin  ──drain, undrain──▶ c1m.admin.<id>            (apart from c1m.edge.<id>, so that nats-server's
 *                                                        permissions tell an admin from a router)
 *   backend──send──▶ c1m.send (queue group: one router) ──sent──▶ reply
 *   backend──send──▶ c1m.send.<p> (one that knows the partitions, from a sent's `partitions`: one hop) ──sent──▶ reply
 *   router ──send──▶ c1m.send.<p> (the leader of the subject's partition p, where there are several; it answers the backend)
 *   edge   ──replay──▶ c1m.replay, or c1m.replay.<p> (partition p's leader) ──replayed──▶ reply
 *   router ──leading──▶ c1m.routers (every router: how many partitions each leads, to share them out)
 *
 * An edge may publish only on its own c1m.presence.<id> (nats-server's permissions), and routers take
 * its identity from that subject, never from a body. Every payload is checked against this union before
 * any handler reads it (decode): one that is not a c1m message is dropped and counted, never thrown.
 */
import { Packr } from 'msgpackr';
import { LATENCY_BUCKETS_MS, type LatencyBuckets } from '../router/latency.js';
import { BUS_WAKEUPS_PER_SECOND, MIN_WINDOW_MS } from '../server/defaults.js';
import { EDGE_ID } from '../server/options.js';
import { TRANSPORTS, type TransportStats } from '../server/stream.js';
import { toSubject, type Subject } from '../subsmanager/subjects.js';
import { DELIVER_MARK, packDeliver, unpackDeliver, whyNotChunks, type Deliver } from './deliver-batch.js';

/** What an edge is doing, as routers and HAProxy's agent check see it. */
export type EdgeState = 'up' | 'full' | 'draining' | 'stopping';

export interface EdgeStats {
  /** Process id, for operators. */
  pid: number;
  state: EdgeState;
  streams: number;
  /** Streams this edge holds at most. */
  capacity: number;
  chunks: number;
  bytes: number;
  slowConsumerCloses: number;
  /** Streams refused for a missing or bad token (--stream-secret). */
  authFailures: number;
  /** The counters per transport (chunked, sse, ws); absent from edges that predate them. */
  transports?: TransportStats;
  rss: number;
}

/**
 * `boot` identifies one run of an edge process: a restarted edge keeps its id
 * but not its boot, and routers forget what its previous run held. `seq`
 * numbers the edge's presence batches, so a router that missed one knows it
 * and asks for a snapshot. The edge's id is the subject's last token.
 */
interface FromEdge {
  boot: string;
  seq: number;
}

export type BusMessage =
  /** Streams opened (`in`) and closed (`out`) on an edge since its last batch; a user appears once per stream, a topic (`kind:id`) once per stream listening to it. */
  | (FromEdge & { t: 'presence'; in: Subject[]; out: Subject[] })
  /** Every second: the edge is alive; its counters for /stats and /metrics. */
  | (FromEdge & { t: 'status'; stats: EdgeStats; latency: LatencyBuckets })
  /** A router asks for full state (at start, after a gap, or for an edge it does not know); `partitions`: the cluster's, where there are several. */
  | { t: 'sync'; partitions?: number }
  /** One part of an edge's snapshot: every stream's user and listened topic, as in presence, as of `seq`. */
  | (FromEdge & { t: 'state'; part: number; last: boolean; users: Subject[]; stats: EdgeStats })
  /** Messages for this edge: ./deliver-batch.ts. */
  | Deliver
  /** A router stopping cleanly: the last batch it sent this edge (of `partition`, where there are several). */
  | { t: 'stopped'; run: string; batch: number; partition?: number }
  /** Stop taking new streams and close the open ones at `rate` per second, so their clients reconnect elsewhere. */
  | { t: 'drain'; rate?: number }
  | { t: 'undrain' }
  /** A backend sends over the bus instead of HTTP: `user` is the subject, a user's integer or a topic's `kind:id` (subsmanager/subjects.ts); `key`, its Idempotency-Key. */
  | { t: 'send'; user: Subject; message: Uint8Array | string; key?: string }
  /**
   * The answer to a send: how many streams it reached, or why it was refused; `partitions`, the cluster's, where there
   * are several; `duplicate`: its key's earlier send was kept as `id`, and nothing was sent again.
   */
  | { t: 'sent'; delivered: number; error?: string; id?: number; duplicate?: true; partitions?: number }
  /** An edge asks for what a resuming stream's user, and the topics it listens to, missed since message `after`, at most `budget` bytes of it. */
  | { t: 'replay'; user: number; after: number; budget: number; topics?: string[] }
  /** An edge asks a partition's leader (on c1m.replay.<p>) for its head: where new streams start, once their logins are in. */
  | { t: 'head' }
  /**
   * The answer: the messages in id order (`more`: the budget cut them short), or why the history cannot tell; with
   * several partitions, `head` is the partition's last id as the answer leaves (every later one reaches the stream live).
   */
  | { t: 'replayed'; ids: number[]; bodies: Uint8Array[]; more: boolean; lost?: 'expired' | 'unknown'; head?: number }
  /** A router says, on c1m.routers, how many partitions it leads: one that leads more than its share hands one over to one that leads fewer. */
  | { t: 'leading'; router: string; partitions: number };

export const SUBJECTS = {
  /** What edge `id` tells the routers (presence, status, snapshot parts); only that edge may publish here. */
  presence: (id: string) => `c1m.presence.${id}`,
  /** Every edge's presence subject, for routers. */
  anyPresence: 'c1m.presence.*',
  replay: 'c1m.replay',
  /** Partition p's replays and sends, taken by its leader, where the cluster has several partitions. */
  replayIn: (partition: number) => `c1m.replay.${partition}`,
  sync: 'c1m.sync',
  send: 'c1m.send',
  sendIn: (partition: number) => `c1m.send.${partition}`,
  /** Where routers say how many partitions each leads, where there are several (routers only). */
  routers: 'c1m.routers',
  edge: (id: string) => `c1m.edge.${id}`,
  admin: (id: string) => `c1m.admin.${id}`,
} as const;

/** The batch window for messages to or from `processes` processes, in whole ms (it goes on edge command lines): MIN_WINDOW_MS, longer when there are many. */
export function busWindowMs(processes: number): number {
  return Math.max(MIN_WINDOW_MS, Math.ceil((processes * 1000) / BUS_WAKEUPS_PER_SECOND));
}

/** The edge a presence subject belongs to, or undefined for a subject that is not one. */
export function edgeOfPresence(subject: string): string | undefined {
  const id = subject.slice(SUBJECTS.presence('').length);
  return subject.startsWith(SUBJECTS.presence('')) && EDGE_ID.test(id) ? id : undefined;
}

// Plain maps, no shared record structures: every message decodes on its own.
const packr = new Packr({ useRecords: false });

/** A deliver in its binary layout (./deliver-batch.ts), every other message as msgpack. */
export const encode = (message: BusMessage): Uint8Array => (message.t === 'deliver' ? packDeliver(message) : packr.pack(message));

type Check = (value: unknown) => boolean;
const count: Check = (v) => Number.isSafeInteger(v) && (v as number) >= 0;
const userId: Check = (v) => Number.isSafeInteger(v) && (v as number) > 0;
/** A topic, `kind:id` (not a user): as subsmanager/subjects.ts defines it. */
const topic: Check = (v) => {
  try {
    return typeof v === 'string' && typeof toSubject(v) === 'string';
  } catch {
    return false;
  }
};
const subject: Check = (v) => userId(v) || topic(v);
const finite: Check = (v) => typeof v === 'number' && Number.isFinite(v);
const text: Check = (v) => typeof v === 'string';
const flag: Check = (v) => typeof v === 'boolean';
const bytes: Check = (v) => v instanceof Uint8Array;
const optional = (check: Check): Check => (v) => v === undefined || check(v);
const oneOf = (...values: unknown[]): Check => (v) => values.includes(v);
// Plain loops: every message a process receives goes through these, deliver batches and presence above all.
const listOf =
  (check: Check, length?: number): Check =>
  (v) => {
    if (!Array.isArray(v) || (length !== undefined && v.length !== length)) return false;
    for (let i = 0; i < v.length; i++) if (!check(v[i])) return false;
    return true;
  };
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
type Fields = [name: string, check: Check][];
/** The name of the first field of `value` that fails its check (or '' when `value` is no object), else undefined. */
function badField(value: unknown, fields: Fields): string | undefined {
  if (!isObject(value)) return '';
  for (const [name, check] of fields) if (!check(value[name])) return name;
  return undefined;
}
const shape = (fields: Record<string, Check>): Check => {
  const entries = Object.entries(fields);
  return (v) => badField(v, entries) === undefined;
};

const latency = shape({ counts: listOf(count, LATENCY_BUCKETS_MS.length + 1), sum: finite });
const transportCounters = shape({ open: count, chunks: count, bytes: count, slowConsumerCloses: count, authFailures: count });
const edgeStats = shape({
  pid: count,
  state: oneOf('up', 'full', 'draining', 'stopping'),
  streams: count,
  capacity: count,
  chunks: count,
  bytes: count,
  slowConsumerCloses: count,
  authFailures: count,
  transports: optional(shape(Object.fromEntries(TRANSPORTS.map((t) => [t, transportCounters])))),
  rss: count,
});
const fromEdge = { boot: text, seq: count };

/** Every message's fields and their checks, by type. */
const FIELDS_BY_TYPE: Record<BusMessage['t'], Record<string, Check>> = {
  presence: { ...fromEdge, in: listOf(subject), out: listOf(subject) },
  status: { ...fromEdge, stats: edgeStats, latency },
  sync: { partitions: optional((v) => count(v) && (v as number) >= 1) },
  state: { ...fromEdge, part: count, last: flag, users: listOf(subject), stats: edgeStats },
  deliver: {
    chunks: bytes,
    topics: optional(listOf(topic)),
    run: optional(text),
    batch: optional(count),
    term: optional(count),
    partition: optional(count),
  },
  stopped: { run: text, batch: count, partition: optional(count) },
  drain: { rate: optional((v) => finite(v) && (v as number) > 0) },
  undrain: {},
  // Types only: which subjects and messages a send may carry is the router's one check (checkSend in router/router.ts), answered with an error.
  send: { user: (v) => finite(v) || text(v), message: (v) => text(v) || bytes(v), key: optional(text) },
  sent: { delivered: count, error: optional(text), id: optional(count), duplicate: optional(oneOf(true)), partitions: optional((v) => count(v) && (v as number) >= 1) },
  // `after` as the client gave it (-1 for one that is not an id): the history tells it is lost. The budget is half a backlog.
  replay: { user: userId, after: (v) => Number.isSafeInteger(v), budget: (v) => finite(v) && (v as number) >= 0, topics: optional(listOf(topic)) },
  head: {},
  replayed: { ids: listOf(count), bodies: listOf(bytes), more: flag, lost: optional(oneOf('expired', 'unknown')), head: optional(count) },
  leading: { router: text, partitions: count },
};
const FIELDS = new Map(Object.entries(FIELDS_BY_TYPE).map(([t, fields]) => [t, Object.entries(fields)]));

/** Why `value` is not a BusMessage (every field of its type checked, and the lists that go together of one length), or undefined when it is one. */
export function whyNotBusMessage(value: unknown): string | undefined {
  if (!isObject(value)) return 'not a map';
  const t = value.t;
  const fields = typeof t === 'string' ? FIELDS.get(t) : undefined;
  if (!fields) return `unknown type ${JSON.stringify(t)}`;
  const field = badField(value, fields);
  if (field !== undefined) return `a ${t} with a missing or bad ${field}`;
  const m = value as BusMessage;
  if (m.t === 'deliver') {
    const why = whyNotChunks(m.chunks, m.topics);
    if (why !== undefined) return `a deliver: ${why}`;
  }
  if (m.t === 'replayed' && m.bodies.length !== m.ids.length) return 'a replayed whose ids and bodies differ in length';
  return undefined;
}

/** Decodes a bus payload; throws, saying why, on bytes that are not one of our messages. */
export function decode(data: Uint8Array): BusMessage {
  const binary = data[0] === DELIVER_MARK;
  let message: unknown;
  try {
    message = binary ? unpackDeliver(data) : packr.unpack(data);
  } catch (e) {
    throw new Error(`not a c1m bus message: ${(e as Error).message}`);
  }
  // One layout per message: a deliver in msgpack is none that c1m sends.
  const why = !binary && (message as { t?: unknown } | undefined)?.t === 'deliver' ? 'a deliver not in its binary layout' : whyNotBusMessage(message);
  if (why !== undefined) throw new Error(`not a c1m bus message: ${why}`);
  return message as BusMessage;
}
