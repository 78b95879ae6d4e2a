/**
 * The router: who should hear a message. It resolves recipients once per send
 * ({user} ∪ subscribers(user)) and writes to each one's connections, which are
 * local streams in one process and remote edges in a cluster (cluster/directory.ts).
 */
import type { Registry } from './registry.js';

/** The one question the router asks the subscription store. */
export interface SubscriberSource {
  getSubscribers(user: number): number[];
}

/** Where accepted messages are kept so that streams can resume (the store's history); it gives each its id. */
export interface MessageLog {
  append(subject: number, body: Uint8Array): number;
}

/** A message as streams receive it: its bytes and '\n', and its id when a MessageLog gave one. */
export type Chunk = Buffer & { id?: number };

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

/** Throws a SendError unless `user` is a user id up to the limit and `message` non-empty bytes or text within it: the one check of every way a send comes in (HTTP, bus, embedding). */
export function checkSend(user: unknown, message: unknown, limits: SendLimits): asserts message is string | Uint8Array {
  if (!Number.isSafeInteger(user) || (user as number) < 1) throw new SendError(400, `not a user id: ${JSON.stringify(user)} (expected an integer from 1 to ${limits.maxUserId})`);
  if ((user as number) > limits.maxUserId) throw new SendError(400, `user id ${user} is above the limit of ${limits.maxUserId}`);
  if (typeof message !== 'string' && !(message instanceof Uint8Array)) throw new SendError(400, `a message is bytes or a string, not ${message === undefined ? 'missing' : typeof message}`);
  const bytes = typeof message === 'string' ? Buffer.byteLength(message) : message.length;
  if (bytes === 0) throw new SendError(400, 'empty message');
  if (bytes > limits.maxMessage) throw new SendError(413, `a message of ${bytes} bytes is over --max-message (${limits.maxMessage})`);
}

export class Router {
  /** Messages passed to send(). */
  sends = 0;

  constructor(
    /** Where recipients are connected: local streams in one process, edges in a cluster. */
    readonly registry: Registry,
    private readonly subscribers: SubscriberSource,
    private readonly limits: SendLimits,
    /** Keeps every send for resumes, and numbers it; without one, messages have no ids. */
    private readonly log?: MessageLog,
  ) {}

  /**
   * Delivers `message` to every connection of `user` and of each of its
   * subscribers. Returns how many streams took it. Users who are not
   * connected miss it, as in the original design. A send outside the
   * limits throws a SendError, and nothing is numbered or delivered.
   */
  send(user: number, message: string | Uint8Array): number {
    checkSend(user, message, this.limits);
    const chunk = toChunk(message);
    // The log keeps a view of the chunk: the bytes are not copied, and nothing writes to a chunk once built.
    // A log that refuses the message (it may not number it) throws before anyone gets it.
    if (this.log) chunk.id = this.log.append(user, chunk.subarray(0, chunk.length - 1));
    this.sends++;
    return this.fanOut(user, chunk);
  }

  /** Delivers a message the log already holds (a new sequencer's first duty, see cluster/directory.ts), with its id. */
  redeliver(user: number, body: Uint8Array, id: number): number {
    return this.fanOut(user, toChunk(body, id));
  }

  private fanOut(user: number, chunk: Chunk): number {
    let delivered = this.registry.deliver(user, chunk);
    for (const subscriber of this.subscribers.getSubscribers(user)) {
      // The store holds each pair once; skipping the sender covers a self-subscription.
      if (subscriber !== user) delivered += this.registry.deliver(subscriber, chunk);
    }
    return delivered;
  }
}
