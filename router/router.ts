/**
 * The router knows who is connected and who should hear a message. It never
 * touches sockets: a connection is anything that accepts a chunk, so the same
 * router drives in-process HTTP streams today and remote edge processes later.
 */

/** What the router needs from a connection. The server owns the socket behind it. */
export interface Connection {
  /** Queues one chunk for delivery; false if the connection can no longer take it. */
  write(chunk: Buffer): boolean;
  /** Ends the connection cleanly (shutdown, drain). */
  close(): void;
}

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
  /** user → its connection, or a list when the same user is connected more than once (rare, so not the default shape). */
  private readonly byUser = new Map<number, Connection | Connection[]>();
  private readonly userOf = new Map<Connection, number>();
  /** Messages passed to send(). */
  sends = 0;

  constructor(private readonly subscribers: SubscriberSource) {}

  /** Number of logged-in connections. */
  get connections(): number {
    return this.userOf.size;
  }

  /** Number of distinct connected users. */
  get users(): number {
    return this.byUser.size;
  }

  login(user: number, conn: Connection): void {
    if (this.userOf.has(conn)) this.logout(conn);
    this.userOf.set(conn, user);
    const existing = this.byUser.get(user);
    if (existing === undefined) this.byUser.set(user, conn);
    else if (Array.isArray(existing)) existing.push(conn);
    else this.byUser.set(user, [existing, conn]);
  }

  /** Forgets a connection; a no-op for one that is not logged in. */
  logout(conn: Connection): void {
    const user = this.userOf.get(conn);
    if (user === undefined) return;
    this.userOf.delete(conn);
    const existing = this.byUser.get(user);
    if (existing === conn) {
      this.byUser.delete(user);
    } else if (Array.isArray(existing)) {
      // Copy on write: a send may be iterating the old list right now.
      const rest = existing.filter((c) => c !== conn);
      this.byUser.set(user, rest.length === 1 ? rest[0] : rest);
    }
  }

  /** Logs every connection out and closes it (shutdown). */
  closeAll(): void {
    const all = [...this.userOf.keys()];
    this.userOf.clear();
    this.byUser.clear();
    for (const conn of all) conn.close();
  }

  /** Is `user` connected here at least once? */
  isConnected(user: number): boolean {
    return this.byUser.has(user);
  }

  /**
   * Delivers `message` to every connection of `user` and of each of its
   * subscribers. Returns how many connections took it. Users who are not
   * connected miss it, as in the original design.
   */
  send(user: number, message: string | Uint8Array): number {
    this.sends++;
    const chunk = toChunk(message);
    let delivered = this.deliver(user, chunk);
    for (const subscriber of this.subscribers.getSubscribers(user)) {
      // The store holds each pair once; skipping the sender covers a self-subscription.
      if (subscriber !== user) delivered += this.deliver(subscriber, chunk);
    }
    return delivered;
  }

  private deliver(user: number, chunk: Buffer): number {
    const target = this.byUser.get(user);
    if (target === undefined) return 0;
    if (!Array.isArray(target)) return target.write(chunk) ? 1 : 0;
    let n = 0;
    for (const conn of target) if (conn.write(chunk)) n++;
    return n;
  }
}
