/**
 * Every message that travels between c1m processes over the bus, as one
 * discriminated union, and its msgpack encoding. Edges hold streams; routers
 * hold the directory (which edge holds whose streams) and the store.
 *
 *   edge   ──presence, status──▶ c1m.presence           (every router)
 *   router ──sync──▶ c1m.sync (every edge) or c1m.edge.<id> (one), reply-to its inbox
 *   edge   ──state──▶ that router's inbox                (full snapshot, in parts)
 *   router ──deliver──▶ c1m.edge.<id>                    (batched per edge)
 *   admin  ──drain, undrain──▶ c1m.admin.<id>            (apart from c1m.edge.<id>, so that nats-server's
 *                                                        permissions tell an admin from a router)
 *   backend──send──▶ c1m.send (queue group: one router) ──sent──▶ reply
 */
import { Packr } from 'msgpackr';
import type { LatencyBuckets } from '../router/latency.js';
import type { TransportStats } from '../server/stream.js';

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
 * and asks for a snapshot.
 */
interface FromEdge {
  edge: string;
  boot: string;
  seq: number;
}

export type BusMessage =
  /** Streams opened (`in`) and closed (`out`) on an edge since its last batch; a user appears once per stream. */
  | (FromEdge & { t: 'presence'; in: number[]; out: number[] })
  /** Every second: the edge is alive; its counters for /stats and /metrics. */
  | (FromEdge & { t: 'status'; stats: EdgeStats; latency: LatencyBuckets })
  /** A router asks for full state (at start, after a gap, or for an edge it does not know). */
  | { t: 'sync' }
  /** One part of an edge's snapshot: every stream's user, as of `seq`. */
  | (FromEdge & { t: 'state'; part: number; last: boolean; users: number[]; stats: EdgeStats })
  /** Messages for this edge: `chunks[i]` goes to every stream of each user in `targets[i]`; `sentAt[i]` is when its send began (epoch ms). */
  /**
   * With a history, `ids[i]` is chunk i's message id, and `router`/`batch` number the batches one router run
   * sent this edge, so that an edge that missed one (NATS restarted, the router crashed) knows it.
   */
  | { t: 'deliver'; chunks: Uint8Array[]; targets: number[][]; sentAt: number[]; ids?: number[]; router?: string; batch?: number; term?: number }
  /** A router stopping cleanly: the last batch it sent this edge. */
  | { t: 'stopped'; router: string; batch: number }
  /** Stop taking new streams and close the open ones at `rate` per second, so their clients reconnect elsewhere. */
  | { t: 'drain'; rate?: number }
  | { t: 'undrain' }
  /** A backend sends over the bus instead of HTTP. */
  | { t: 'send'; user: number; message: Uint8Array | string }
  /** The answer to a send: how many streams it reached, or why it was refused. */
  | { t: 'sent'; delivered: number; error?: string; id?: number }
  /** An edge asks for what a resuming stream's user missed since message `after`, at most `budget` bytes of it. */
  | { t: 'replay'; user: number; after: number; budget: number }
  /** The answer: the messages in id order (`more`: the budget cut them short), or why the history cannot tell. */
  | { t: 'replayed'; ids: number[]; bodies: Uint8Array[]; more: boolean; lost?: 'expired' | 'unknown' };

export const SUBJECTS = {
  presence: 'c1m.presence',
  replay: 'c1m.replay',
  sync: 'c1m.sync',
  send: 'c1m.send',
  edge: (id: string) => `c1m.edge.${id}`,
  admin: (id: string) => `c1m.admin.${id}`,
} as const;

/** The shortest batch window of the bus's frequent messages (deliver batches, presence), ms. */
export const MIN_WINDOW_MS = 5;
/**
 * Under load, the frequent messages of N processes (a router's deliver batches
 * to N edges; N edges' presence to a router) wake their receivers at most this
 * often per second in all: every message costs its receiver a wake-up whatever
 * it carries, so many processes share a budget of them (the README's cluster
 * section has the figures).
 */
export const BUS_WAKEUPS_PER_SECOND = 2500;

/** The batch window for messages to or from `processes` processes, in whole ms (it goes on edge command lines): MIN_WINDOW_MS, longer when there are many. */
export function busWindowMs(processes: number): number {
  return Math.max(MIN_WINDOW_MS, Math.ceil((processes * 1000) / BUS_WAKEUPS_PER_SECOND));
}

/** Edge ids become NATS subject tokens: keep them to safe characters. */
export const EDGE_ID = /^[A-Za-z0-9_-]{1,64}$/;

// Plain maps, no shared record structures: every message decodes on its own.
const packr = new Packr({ useRecords: false });

export const encode = (message: BusMessage): Uint8Array => packr.pack(message);

/** Decodes a bus payload; throws on bytes that are not one of ours. */
export function decode(data: Uint8Array): BusMessage {
  const message = packr.unpack(data) as BusMessage;
  if (typeof message !== 'object' || message === null || typeof message.t !== 'string') throw new Error('not a c1m bus message');
  return message;
}
