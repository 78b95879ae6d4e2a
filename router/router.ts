/**
 * The router: who should hear a message. It resolves recipients once per send
 * ({user} ∪ subscribers(user)) and writes to each one's connections, which are
 * local streams in one process and remote edges in a cluster (router/cluster.ts).
 */
import type { Registry } from './registry.js';

/** The one question the router asks the subscription store. */
export interface SubscriberSource {
  getSubscribers(user: number): number[];
}

const NEWLINE = 0x0a;

/**
 * A message travels as one HTTP chunk ending in '\n', so a client that cannot
 * see chunk boundaries can still split messages. Built once per send, shared by
 * every recipient.
 */
export function toChunk(message: string | Uint8Array): Buffer {
  if (typeof message === 'string') return Buffer.from(message + '\n');
  const chunk = Buffer.allocUnsafe(message.length + 1);
  chunk.set(message, 0);
  chunk[message.length] = NEWLINE;
  return chunk;
}

export class Router {
  /** Messages passed to send(). */
  sends = 0;

  constructor(
    /** Where recipients are connected: local streams in one process, edges in a cluster. */
    readonly registry: Registry,
    private readonly subscribers: SubscriberSource,
  ) {}

  /**
   * Delivers `message` to every connection of `user` and of each of its
   * subscribers. Returns how many streams took it. Users who are not
   * connected miss it, as in the original design.
   */
  send(user: number, message: string | Uint8Array): number {
    this.sends++;
    const chunk = toChunk(message);
    let delivered = this.registry.deliver(user, chunk);
    for (const subscriber of this.subscribers.getSubscribers(user)) {
      // The store holds each pair once; skipping the sender covers a self-subscription.
      if (subscriber !== user) delivered += this.registry.deliver(subscriber, chunk);
    }
    return delivered;
  }
}
