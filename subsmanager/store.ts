import Database from 'better-sqlite3';
import { toPairs, type Pair } from './pairs.js';
import type { Subject } from './subjects.js';
import { DEFAULT_CACHE_MIB } from './defaults.js';
import { checkWritable, createPrivately, openFailure } from './files.js';
import { History, type HistoryOptions } from './history.js';
import { enableWal } from './wal.js';

/** The subscription store as the rest of c1m sees it; SQLite is one implementation. */
export interface SubscriptionStore {
  /** Adds pairs in one transaction; existing pairs are ignored. Returns how many were new. */
  addSubscriptions(pairs: readonly Pair[]): number;
  /** Removes pairs in one transaction. Returns how many existed. */
  removeSubscriptions(pairs: readonly Pair[]): number;
  /** Who receives what is sent to `subject` (a user's subscribers, or a topic's). */
  getSubscribers(subject: Subject): number[];
  /** The users and topics `user` is subscribed to. */
  getSubscriptions(user: number): Subject[];
  /** Number of stored pairs. */
  count(): number;
  /** The message history kept beside the subscriptions, where the store has one (see history.ts). */
  history?(options: HistoryOptions): History;
  close(): void;
}

/**
 * The same store where each write is answered once it is replicated and applied to this process's view
 * (cluster/store-log.ts): the lookups as above, the counts of writes later.
 */
export interface ReplicatedSubscriptionStore extends Omit<SubscriptionStore, 'addSubscriptions' | 'removeSubscriptions' | 'history' | 'close'> {
  addSubscriptions(pairs: readonly Pair[]): Promise<number>;
  removeSubscriptions(pairs: readonly Pair[]): Promise<number>;
  history(options: HistoryOptions): History;
  close(): Promise<void>;
}

/** A write the store could not take now (its replication is unreachable): the error says whether it may have been applied; retrying is safe. */
export class StoreUnavailableError extends Error {}

export interface StoreOptions {
  /** SQLite page cache bound, in MiB (default 64). */
  cacheMiB?: number;
  /**
   * Memory-mapped window over the database file, in MiB (default 0: off). Reads
   * of the first mmapMiB of the file then come straight from the OS page cache
   * with no copy into SQLite's cache. Mapped pages that were read count in the
   * process RSS (up to mmapMiB) but are clean, shared file cache the kernel can
   * reclaim; cacheMiB then bounds only the part of the file beyond the window
   * and the pages being written. Writes still go through the WAL as usual:
   * no effect on crash safety.
   */
  mmapMiB?: number;
  /**
   * Page size of a NEW database file, in bytes (a power of two, 512-65536;
   * default 16384). An existing file keeps its own: in WAL mode it cannot change.
   */
  pageSize?: number;
  readonly?: boolean;
  /**
   * How long a write waits for another process's write lock (a bulk load's
   * copy) before failing with SQLITE_BUSY, in ms (default 5000). better-sqlite3
   * is synchronous: a server's connection waits with every stream frozen, so
   * the server sets this low and answers 503 instead.
   */
  busyTimeoutMs?: number;
  /**
   * Read the subscriptions table once at open, so that its pages sit in
   * SQLite's page cache (as many as cacheMiB holds) and getSubscribers skips
   * the read syscall of a cold page. Worth it when cacheMiB holds the table.
   */
  warmCache?: boolean;
}

/**
 * 16 KiB pages: a bulk load writes a quarter of the WAL frames and B-tree
 * pages of 4 KiB ones, so its commit's checkpoint is shorter; lookups are as
 * fast (docs/benchmarks/2026-11-22-friends.md has the figures).
 */
export const DEFAULT_PAGE_SIZE = 16384;

/**
 * Two WITHOUT ROWID tables hold the same pairs, each keyed for one direction:
 * `subscriptions` by (subscribee, subscriber) for getSubscribers, and
 * `subscriptions_by_subscriber` by (subscriber, subscribee) for
 * getSubscriptions. Each lookup is one range scan of a primary key. A second
 * table instead of a secondary index because an empty store can then be bulk
 * loaded by building both tables in parallel elsewhere and copying them in
 * with SQLite's transfer optimization (see bulkload.ts); an index cannot be
 * copied that way. Writers keep the two in step in one transaction.
 *
 * The bulk loader builds scratch tables from these same statements: the
 * transfer optimization only applies between tables of identical shape.
 *
 * A subscribee is a user's integer or a topic's `kind:id` text (subjects.ts):
 * the tables are not STRICT, so INTEGER affinity keeps text that does not read
 * as a number as text, and the primary keys order integers before text. Users'
 * rows, their bytes and their lookups are as before.
 */
export const TABLES = {
  subscriptions: `CREATE TABLE subscriptions (
  subscribee INTEGER NOT NULL,
  subscriber INTEGER NOT NULL,
  PRIMARY KEY (subscribee, subscriber)
) WITHOUT ROWID`,
  subscriptions_by_subscriber: `CREATE TABLE subscriptions_by_subscriber (
  subscriber INTEGER NOT NULL,
  subscribee INTEGER NOT NULL,
  PRIMARY KEY (subscriber, subscribee)
) WITHOUT ROWID`,
} as const;

/** Layout version, kept in PRAGMA user_version: 1 is the two tables above. */
export const SCHEMA_VERSION = 1;

export class StoreError extends Error {}

/** Opens (creating if needed) a store file; ':memory:' for a throwaway one. */
export function openStore(path: string, options: StoreOptions = {}): SqliteStore {
  if (!options.readonly) createPrivately(path);
  let db: Database.Database | undefined;
  try {
    if (!options.readonly) checkWritable(path);
    db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    // page_size only takes effect on a file with no pages yet, so it must come before
    // journal_mode=WAL and the schema; on an existing file it is a no-op. Layout only:
    // no effect on crash safety.
    if (!options.readonly) db.pragma(`page_size = ${options.pageSize ?? DEFAULT_PAGE_SIZE}`);
    // WAL: readers (a running server) never block on a writer (a bulk load), and a
    // crash mid-transaction leaves the last committed state. synchronous=NORMAL in
    // WAL mode survives process crashes; only a power loss can drop the latest commits.
    if (!options.readonly) enableWal(db);
    db.pragma('synchronous = NORMAL');
    db.pragma(`cache_size = ${-Math.round((options.cacheMiB ?? DEFAULT_CACHE_MIB) * 1024)}`);
    // Read path only (see StoreOptions.mmapMiB); capped by SQLite's build at ~2 GiB.
    db.pragma(`mmap_size = ${Math.round((options.mmapMiB ?? 0) * 2 ** 20)}`);
    // Opening waits as long as it must (better-sqlite3's 5 s): two processes starting on a new file
    // (routers of one cluster) take turns creating the tables. The caller's own timeout applies after.
    prepareLayout(db, options.readonly ?? false);
    db.pragma(`busy_timeout = ${Math.round(options.busyTimeoutMs ?? 5000)}`);
    if (options.warmCache) db.prepare('SELECT count(*) FROM subscriptions').get();
    return new SqliteStore(db);
  } catch (err) {
    db?.close();
    throw new StoreError(openFailure('subscription store', path, err).message);
  }
}

/**
 * Creates the tables in a new, empty file, in one transaction, or checks that
 * an existing file has this code's layout; anything else is refused rather
 * than guessed at. The version is read again under the write lock, in case
 * another process created the tables meanwhile.
 */
function prepareLayout(db: Database.Database, readonly: boolean): void {
  const check = (): boolean => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version === SCHEMA_VERSION) return true;
    if (version > SCHEMA_VERSION) throw new Error(`the store has layout version ${version}, newer than this c1m's ${SCHEMA_VERSION}; upgrade c1m`);
    const empty = db.prepare('SELECT count(*) FROM sqlite_master').pluck().get() === 0;
    if (!empty || readonly) throw new Error(`not a c1m subscription store (no layout version ${SCHEMA_VERSION})`);
    return false;
  };
  // Both reads in one snapshot: between two autocommit reads another process's creation could commit, and the
  // tables would be seen without their version (a router refused a file its sibling had just made).
  if (db.transaction(check)()) return;
  db.transaction(() => {
    if (check()) return;
    db.exec(`${TABLES.subscriptions}; ${TABLES.subscriptions_by_subscriber};`);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

export class SqliteStore implements SubscriptionStore {
  private readonly insert;
  private readonly insertBySubscriber;
  private readonly remove;
  private readonly removeBySubscriber;
  /** The two lookups, public so that their query plans can be checked (tests, diagnostics). */
  readonly subscribers: Database.Statement;
  readonly subscriptions: Database.Statement;
  private readonly rows;
  private readonly addAll;
  private readonly removeAll;

  constructor(readonly db: Database.Database) {
    this.insert = db.prepare('INSERT OR IGNORE INTO subscriptions (subscriber, subscribee) VALUES (?, ?)');
    this.insertBySubscriber = db.prepare('INSERT OR IGNORE INTO subscriptions_by_subscriber (subscriber, subscribee) VALUES (?, ?)');
    this.remove = db.prepare('DELETE FROM subscriptions WHERE subscriber = ? AND subscribee = ?');
    this.removeBySubscriber = db.prepare('DELETE FROM subscriptions_by_subscriber WHERE subscriber = ? AND subscribee = ?');
    // One row holding one JSON string, instead of one row per subscriber: better-sqlite3's
    // .pluck().all() pays per row, and JSON.parse of the array costs a fraction of that, which
    // shows on hubs. The aggregate sees the rows in primary-key scan order, so the ids come out
    // ascending, as before.
    this.subscribers = db.prepare('SELECT json_group_array(subscriber) FROM subscriptions WHERE subscribee = ?').pluck();
    this.subscriptions = db.prepare('SELECT subscribee FROM subscriptions_by_subscriber WHERE subscriber = ?').pluck();
    this.rows = db.prepare('SELECT count(*) FROM subscriptions').pluck();
    this.addAll = db.transaction((pairs: readonly Pair[]) => {
      let added = 0;
      // Both tables, always (one transaction); the count comes from the primary one.
      for (const [subscriber, subscribee] of pairs) {
        added += this.insert.run(subscriber, subscribee).changes;
        this.insertBySubscriber.run(subscriber, subscribee);
      }
      return added;
    });
    this.removeAll = db.transaction((pairs: readonly Pair[]) => {
      let removed = 0;
      for (const [subscriber, subscribee] of pairs) {
        removed += this.remove.run(subscriber, subscribee).changes;
        this.removeBySubscriber.run(subscriber, subscribee);
      }
      return removed;
    });
  }

  addSubscriptions(pairs: readonly Pair[]): number {
    return this.addAll(toPairs(pairs));
  }

  removeSubscriptions(pairs: readonly Pair[]): number {
    return this.removeAll(toPairs(pairs));
  }

  getSubscribers(subject: Subject): number[] {
    return JSON.parse(this.subscribers.get(subject) as string) as number[];
  }

  getSubscriptions(user: number): Subject[] {
    return this.subscriptions.all(user) as Subject[];
  }

  count(): number {
    return this.rows.get() as number;
  }

  /** The message history, in a file beside this store's (see history.ts). */
  history(options: HistoryOptions): History {
    return History.attach(this.db, options);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
