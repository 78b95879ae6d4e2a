/**
 * The router: who should hear a message. It resolves recipients once per send
 * ({subject} ∪ subscribers(subject), the subject counting where it is a connected user) and writes to each one's connections, which are
 * local streams in one process and remote edges in a cluster (cluster/directory.ts).
 */
import { IDEMPOTENCY_KEY_RULES, isIdempotencyKey, type MessageHistory } from '../subsmanager/history.js';
import { kindOf, SubjectError, toSubject, type Subject } from '../subsmanager/subjects.js';
import type { Registry } from './registry.js';

/** The one question the router asks the subscription store. */
export interface SubscriberSource {
  getSubscribers(subject: Subject): number[];
}

/** Where accepted messages are kept so that streams can resume (the store's history); it gives each its id, and remembers idempotency keys. */
export interface MessageLog {
  append(subject: Subject, body: Uint8Array, key?: string): number;
  keyed(subject: Subject, key: string): number | undefined;
}

/** A message as streams receive it: its bytes and '\n', its id when a MessageLog gave one, and the partition that numbered it where a cluster has several. */
export type Chunk = Buffer & { id?: number; partition?: number };

const NEWLINE = 0x0a;

/**
 * A message travels as one HTTP chunk ending in '\n', so a client that cannot
 * see chunk boundaries can still split messages. Built once per send, shared by
 * every recipient.
 */
export function toChunk(message: string | Uint8Array, id?: number): Chunk {
  let chunk: Chunk;
  if (typeof message === 'string') chunk = Buffer.from(message + '\n');
  else {
    chunk = Buffer.allocUnsafe(message.length + 1);
    chunk.set(message, 0);
    chunk[message.length] = NEWLINE;
  }
  if (id !== undefined) chunk.id = id;
  return chunk;
}

/**
 * The answer to a send: the streams it reached, and the message's id (for streams that resume) where the process keeps
 * a history. `duplicate`: an earlier send with the same Idempotency-Key and subject was kept as message `id`; this one
 * sent nothing (`delivered` 0).
 */
export interface Sent {
  delivered: number;
  id?: number;
  duplicate?: true;
}

/** What a send may carry: the server's --max-user-id and --max-message. */
export interface SendLimits {
  maxUserId: number;
  /** Bytes. */
  maxMessage: number;
}

/** A send refused before anything was numbered or delivered; `status` is the HTTP API's answer (400, or 413 for a message too large). */
export class SendError extends Error {
  constructor(
    readonly status: 400 | 413,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The subject a send goes to, canonical (`user:5` as 5, see subjects.ts), or a SendError unless `subject` names one
 * (users up to the limit) and `message` is non-empty bytes or text within it: the one check of every way a send comes
 * in (HTTP, bus, embedding).
 */
export function checkSend(subject: unknown, message: unknown, limits: SendLimits): Subject {
  const to = toSendSubject(subject, limits.maxUserId);
  if (typeof message !== 'string' && !(message instanceof Uint8Array)) throw new SendError(400, `a message is bytes or a string, not ${message === undefined ? 'missing' : typeof message}`);
  const bytes = typeof message === 'string' ? Buffer.byteLength(message) : message.length;
  if (bytes === 0) throw new SendError(400, 'empty message');
  if (bytes > limits.maxMessage) throw new SendError(413, `a message of ${bytes} bytes is over --max-message (${limits.maxMessage})`);
  return to;
}

/** `key` as an Idempotency-Key, or a SendError (400) saying the form it must have. */
export function checkIdempotencyKey(key: unknown): string {
  if (!isIdempotencyKey(key)) throw new SendError(400, `bad Idempotency-Key ${JSON.stringify(key)}: ${IDEMPOTENCY_KEY_RULES}`);
  return key;
}

function toSendSubject(subject: unknown, maxUserId: number): Subject {
  try {
    return toSubject(subject, maxUserId);
  } catch (err) {
    if (err instanceof SubjectError) throw new SendError(400, err.message);
    throw err;
  }
}

/** Sends and the streams they reached, of one kind of subject. */
export interface KindCounts {
  sends: number;
  deliveries: number;
}

/** Kinds counted by name; sends to further kinds count under OTHER_KINDS, so that /metrics' label values stay few. */
const MAX_COUNTED_KINDS = 32;
const OTHER_KINDS = 'other';

export class Router {
  /** Messages passed to send(). */
  sends = 0;
  /** Users' sends are this.sends less the topics'; kept in plain fields, so that a friends send pays no lookup. */
  private userDeliveries = 0;
  private readonly topicCounts = new Map<string, KindCounts>();

  constructor(
    /** Where recipients are connected: local streams in one process, edges in a cluster. */
    readonly registry: Registry,
    private readonly subscribers: SubscriberSource,
    private readonly limits: SendLimits,
    /** Keeps every send for resumes, and numbers it; without one, messages have no ids. */
    private readonly log?: MessageLog,
  ) {}

  /**
   * Delivers `message` to every connection of `subject` (a user's, or those
   * listening to a topic) and of each of its subscribers, once per stream. Returns how many streams took it.
   * Users who are not connected miss it, as in the original design. A send
   * outside the limits throws a SendError, and nothing is numbered or delivered. `key`, the send's idempotency key,
   * is kept with the message by the log: the caller asked sentBefore() first, as this does not.
   */
  send(subject: Subject, message: string | Uint8Array, key?: string): number {
    const to = checkSend(subject, message, this.limits);
    const chunk = toChunk(message as string | Uint8Array);
    // The log keeps a view of the chunk: the bytes are not copied, and nothing writes to a chunk once built.
    // A log that refuses the message (it may not number it) throws before anyone gets it.
    if (this.log) chunk.id = this.log.append(to, chunk.subarray(0, chunk.length - 1), key);
    this.sends++;
    const delivered = this.fanOut(to, chunk);
    if (typeof to === 'number') this.userDeliveries += delivered;
    else this.countTopic(to, delivered);
    return delivered;
  }

  /**
   * The id of the message an earlier send to `subject` with idempotency key `key` was given, within the log's window:
   * a send with that key again answers it, and sends nothing. A SendError (400) for a key of another form, or
   * without a log to remember keys in. Before send(), with the same key.
   */
  sentBefore(subject: unknown, key: unknown): number | undefined {
    const checked = checkIdempotencyKey(key);
    if (!this.log) throw new SendError(400, 'an Idempotency-Key needs the message history, which remembers keys (--history-seconds above 0)');
    return this.log.keyed(toSendSubject(subject, this.limits.maxUserId), checked);
  }

  private countTopic(topic: string, delivered: number): void {
    let kind = kindOf(topic);
    if (!this.topicCounts.has(kind) && this.topicCounts.size >= MAX_COUNTED_KINDS) kind = OTHER_KINDS;
    const counts = this.topicCounts.get(kind) ?? { sends: 0, deliveries: 0 };
    counts.sends++;
    counts.deliveries += delivered;
    this.topicCounts.set(kind, counts);
  }

  /** Sends and deliveries by kind of subject (`user`, `photo`…; at most MAX_COUNTED_KINDS topic kinds, then `other`). */
  kinds(): Record<string, KindCounts> {
    let topicSends = 0;
    for (const counts of this.topicCounts.values()) topicSends += counts.sends;
    return { user: { sends: this.sends - topicSends, deliveries: this.userDeliveries }, ...Object.fromEntries(this.topicCounts) };
  }

  /** Delivers a message the log already holds (a new sequencer's first duty, see cluster/directory.ts), with its id. */
  redeliver(subject: Subject, body: Uint8Array, id: number): number {
    return this.fanOut(subject, toChunk(body, id));
  }

  private fanOut(subject: Subject, chunk: Chunk): number {
    if (typeof subject === 'string') return this.registry.deliverTopic(subject, this.subscribers.getSubscribers(subject), chunk);
    let delivered = this.registry.deliver(subject, chunk);
    for (const subscriber of this.subscribers.getSubscribers(subject)) {
      // The store holds each pair once; skipping the sender covers a self-subscription.
      if (subscriber !== subject) delivered += this.registry.deliver(subscriber, chunk);
    }
    return delivered;
  }
}

/** A send its history did not keep (a replicated history's stream did not acknowledge it): the backend may send it again. */
export class NotKeptError extends Error {
  constructor() {
    super('the history could not keep the message (not acknowledged): try again');
  }
}

/**
 * A send as every way in takes it (the HTTP API, the bus): a retry of a send already kept (the same subject and
 * Idempotency-Key) answers the first one's id and delivers nothing; any other is numbered and delivered by `deliver`.
 * With a history, the answer waits until the history keeps the message, so that a send the backend heard was taken
 * is never lost: the SQLite history writes it to its file at once (it survives a kill -9) and the answer is returned;
 * a replicated history's stream acknowledges it later, and the answer is a promise (a NotKeptError if it does not).
 */
export function sendOnce(router: Router, history: Pick<MessageHistory, 'lastId' | 'afterCommit'> | undefined, subject: Subject, key: string | undefined, deliver: () => number): Sent | Promise<Sent> {
  const first = key === undefined ? undefined : router.sentBefore(subject, key);
  const delivered = first === undefined ? deliver() : 0;
  if (!history) return { delivered };
  const sent: Sent = first === undefined ? { delivered, id: history.lastId } : { delivered: 0, id: first, duplicate: true };
  let kept: boolean | undefined;
  let settle: ((kept: boolean) => void) | undefined;
  history.afterCommit(
    () => (settle ? settle(true) : (kept = true)),
    () => (settle ? settle(false) : (kept = false)),
  );
  // Kept at once, or refused at once (a history that stopped keeping): no promise to wait for.
  if (kept === true) return sent;
  if (kept === false) throw new NotKeptError();
  return new Promise<Sent>((resolve, reject) => (settle = (done) => (done ? resolve(sent) : reject(new NotKeptError()))));
}
