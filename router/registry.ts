/**
 * Who is connected: user → connections. An edge process keeps one for its own
 * streams; a router keeps one for the whole cluster (see Router). It never
 * touches sockets: a connection is anything that accepts a chunk, a stream (or
 * a resuming stream's holder) on a server or an edge, and on a router all of
 * one user's streams on one edge. So a server's or an edge's connections are
 * its streams; a router counts streams in its directory instead.
 */

import type { Subject } from '../subsmanager/subjects.js';

/** What the registry needs from a connection. The server owns the socket behind it. */
export interface Connection {
  /** The user this connection belongs to; fixed for its lifetime. */
  readonly user: number;
  /** Topics (`kind:id`) this stream listens to while it is open; not stored anywhere else. Changed only through Registry.setTopics. */
  readonly topics?: readonly string[];
  /**
   * Queues one chunk for delivery. Returns how many streams took it: 1 or 0
   * for a local stream, all of one user's streams on an edge for a remote one.
   */
  write(chunk: Buffer): number;
  /** Ends the connection cleanly (shutdown, drain). */
  close(): void;
}

/** A stream's topics when it listens to none: one shared array, so that every stream has the same shape. */
export const NO_TOPICS: readonly string[] = Object.freeze([]);

/** Told of every login and logout, in order (an edge reports them to the routers): a stream's user, then each topic it listens to. */
export interface PresenceObserver {
  login(subject: Subject): void;
  logout(subject: Subject): void;
}

export class Registry {
  /** user → its connection, or a set when the same user is connected more than once (rare, so not the default shape). */
  private readonly byUser = new Map<number, Connection | Set<Connection>>();
  /** topic → the connections listening to it, as byUser; apart, so that users' lookups never meet a string key. */
  private readonly byTopic = new Map<string, Connection | Set<Connection>>();
  /** topic → a one-topic list of it, while it has listeners: what intern hands out, so that streams share names and lists. */
  private readonly names = new Map<string, readonly string[]>();
  private count = 0;

  constructor(
    /** Connections one user may hold at once (tabs); login refuses more. */
    readonly maxPerUser = Infinity,
    private readonly observer?: PresenceObserver,
  ) {}

  /** Number of logged-in connections. */
  get connections(): number {
    return this.count;
  }

  /** Number of distinct connected users. */
  get users(): number {
    return this.byUser.size;
  }

  /** Is `user` connected here at least once? */
  isConnected(user: number): boolean {
    return this.byUser.has(user);
  }

  /** Connections `user` holds now. */
  connectionsOf(user: number): number {
    const held = this.byUser.get(user);
    return held === undefined ? 0 : held instanceof Set ? held.size : 1;
  }

  /** Adds a connection; false (and nothing changed) if its user already holds maxPerUser. */
  login(conn: Connection): boolean {
    const held = this.byUser.get(conn.user);
    if (held === undefined) {
      this.byUser.set(conn.user, conn);
    } else if (held instanceof Set) {
      if (held.has(conn)) return true;
      if (held.size >= this.maxPerUser) return false;
      held.add(conn);
    } else {
      if (held === conn) return true;
      if (this.maxPerUser <= 1) return false;
      this.byUser.set(conn.user, new Set([held, conn]));
    }
    this.count++;
    if (conn.topics) for (const topic of conn.topics) this.listen(topic, conn);
    this.observer?.login(conn.user);
    return true;
  }

  /** Forgets a connection in O(1); a no-op for one that is not logged in. */
  logout(conn: Connection): void {
    const held = this.byUser.get(conn.user);
    if (held === conn) {
      this.byUser.delete(conn.user);
    } else if (held instanceof Set && held.delete(conn)) {
      // A Set may lose members while a send iterates it: iteration skips them, no copy needed.
      if (held.size === 0) this.byUser.delete(conn.user);
    } else {
      return;
    }
    if (conn.topics) for (const topic of conn.topics) this.unlisten(topic, conn);
    this.count--;
    this.observer?.logout(conn.user);
  }

  /** Writes `chunk` to every connection of `user`; returns how many streams took it. */
  deliver(user: number, chunk: Buffer): number {
    const held = this.byUser.get(user);
    if (held === undefined) return 0;
    if (!(held instanceof Set)) return held.write(chunk);
    let n = 0;
    for (const conn of held) n += conn.write(chunk);
    return n;
  }

  /** Writes a message to `topic` to every connection listening to it and to every connection of each of `subscribers` that does not, so each stream gets it once; returns how many streams took it. */
  deliverTopic(topic: string, subscribers: readonly number[], chunk: Buffer): number {
    let n = 0;
    const listening = this.byTopic.get(topic);
    if (listening instanceof Set) for (const conn of listening) n += conn.write(chunk);
    else if (listening !== undefined) n += listening.write(chunk);
    for (const subscriber of subscribers) {
      const held = this.byUser.get(subscriber);
      if (held === undefined) continue;
      for (const conn of held instanceof Set ? held : [held]) if (!conn.topics?.includes(topic)) n += conn.write(chunk);
    }
    return n;
  }

  /**
   * `topics` as a stream should keep them: the names listened to already as the registry holds them, a single topic's
   * list shared, none as NO_TOPICS. Each stream's own copies would cost more than its entries in byTopic
   * (docs/benchmarks/2026-12-06-topics.md has the figures).
   */
  intern(topics: readonly string[]): readonly string[] {
    if (topics.length === 0) return NO_TOPICS;
    if (topics.length === 1) return this.names.get(topics[0]) ?? topics;
    return topics.map((topic) => this.names.get(topic)?.[0] ?? topic);
  }

  /**
   * Changes the topics an open connection listens to (a WebSocket's subscribe and unsubscribe): from now on for one
   * that is logged in; one that is not yet (its replay is on its way) listens to them when it logs in.
   */
  setTopics(conn: Connection & { topics: readonly string[] }, topics: readonly string[]): void {
    const before = conn.topics;
    const after = this.intern(topics);
    conn.topics = after;
    if (!this.holds(conn)) return;
    for (const topic of before) if (!after.includes(topic)) this.unlisten(topic, conn);
    for (const topic of after) if (!before.includes(topic)) this.listen(topic, conn);
  }

  private holds(conn: Connection): boolean {
    const held = this.byUser.get(conn.user);
    return held === conn || (held instanceof Set && held.has(conn));
  }

  /** Connections listening to `topic` now. */
  listenersOf(topic: string): number {
    const held = this.byTopic.get(topic);
    return held === undefined ? 0 : held instanceof Set ? held.size : 1;
  }

  /** Adds `conn` to `topic`'s listeners: a stream's topics at its login, or a router's stand-in for an edge's listeners of it. */
  listen(topic: string, conn: Connection): void {
    const held = this.byTopic.get(topic);
    if (held === conn || (held instanceof Set && held.has(conn))) return;
    if (held === undefined) {
      this.byTopic.set(topic, conn);
      this.names.set(topic, conn.topics?.length === 1 && conn.topics[0] === topic ? conn.topics : [topic]);
    } else if (held instanceof Set) held.add(conn);
    else this.byTopic.set(topic, new Set([held, conn]));
    this.observer?.login(topic);
  }

  unlisten(topic: string, conn: Connection): void {
    const held = this.byTopic.get(topic);
    if (held instanceof Set ? !held.delete(conn) : held !== conn) return;
    if (!(held instanceof Set) || held.size === 0) {
      this.byTopic.delete(topic);
      this.names.delete(topic);
    }
    this.observer?.logout(topic);
  }

  /** The topic of every listening connection, one entry per connection and topic (beside everyConnectionUser in an edge's state). */
  everyListeningTopic(): string[] {
    const topics: string[] = [];
    for (const [topic, held] of this.byTopic) {
      if (held instanceof Set) for (let i = 0; i < held.size; i++) topics.push(topic);
      else topics.push(topic);
    }
    return topics;
  }

  /** The user of every connection, one entry per connection (an edge's full state for a router). */
  everyConnectionUser(): number[] {
    const users: number[] = [];
    for (const [user, held] of this.byUser) {
      if (held instanceof Set) for (let i = 0; i < held.size; i++) users.push(user);
      else users.push(user);
    }
    return users;
  }

  /** Logs out and closes up to `n` connections (drain); returns how many. */
  closeSome(n: number): number {
    const picked: Connection[] = [];
    for (const held of this.byUser.values()) {
      if (held instanceof Set) for (const conn of held) picked.push(conn);
      else picked.push(held);
      if (picked.length >= n) break;
    }
    for (const conn of picked.slice(0, n)) {
      this.logout(conn);
      conn.close();
    }
    return Math.min(n, picked.length);
  }

  /** Logs every connection out and closes it (shutdown). */
  closeAll(): void {
    this.closeSome(Infinity);
  }
}
