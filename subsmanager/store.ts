import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { toPairs, type Pair } from './pairs.js';

/** The subscription store as the rest of c1m sees it; SQLite is one implementation. */
export interface SubscriptionStore {
  /** Adds pairs in one transaction; existing pairs are ignored. Returns how many were new. */
  addSubscriptions(pairs: readonly Pair[]): number;
  /** Removes pairs in one transaction. Returns how many existed. */
  removeSubscriptions(pairs: readonly Pair[]): number;
  /** Who receives what `user` sends. */
  getSubscribers(user: number): number[];
  /** Whom `user` follows. */
  getSubscriptions(user: number): number[];
  /** Number of stored pairs. */
  count(): number;
  close(): void;
}

export interface StoreOptions {
  /** SQLite page cache bound, in MiB. */
  cacheMiB?: number;
  readonly?: boolean;
}

/**
 * Rows are keyed by (subscribee, subscriber) in a WITHOUT ROWID table, so
 * getSubscribers is one range scan of the primary key with no table lookup;
 * the secondary index serves getSubscriptions.
 */
export const SCHEMA = `
CREATE TABLE IF NOT EXISTS subscriptions (
  subscribee INTEGER NOT NULL,
  subscriber INTEGER NOT NULL,
  PRIMARY KEY (subscribee, subscriber)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_subscriber ON subscriptions (subscriber);
`;

export class StoreError extends Error {}

/** Opens (creating if needed) a store file; ':memory:' for a throwaway one. */
export function openStore(path: string, options: StoreOptions = {}): SqliteStore {
  if (path !== ':memory:' && !options.readonly) mkdirSync(dirname(path), { recursive: true });
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    // WAL: readers (a running server) never block on a writer (a bulk load), and a
    // crash mid-transaction leaves the last committed state. synchronous=NORMAL in
    // WAL mode survives process crashes; only a power loss can drop the latest commits.
    if (!options.readonly) db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma(`cache_size = ${-Math.round((options.cacheMiB ?? 64) * 1024)}`);
    db.pragma('busy_timeout = 5000');
    if (!options.readonly) db.exec(SCHEMA);
    return new SqliteStore(db);
  } catch (err) {
    db?.close();
    const code = (err as { code?: string }).code ?? '';
    throw new StoreError(`cannot open subscription store ${path}: ${(err as Error).message}${code ? ` (${code})` : ''}`);
  }
}

export class SqliteStore implements SubscriptionStore {
  private readonly insert;
  private readonly remove;
  private readonly subscribers;
  private readonly subscriptions;
  private readonly rows;
  private readonly addAll;
  private readonly removeAll;

  constructor(readonly db: Database.Database) {
    this.insert = db.prepare('INSERT OR IGNORE INTO subscriptions (subscriber, subscribee) VALUES (?, ?)');
    this.remove = db.prepare('DELETE FROM subscriptions WHERE subscriber = ? AND subscribee = ?');
    this.subscribers = db.prepare('SELECT subscriber FROM subscriptions WHERE subscribee = ?').pluck();
    this.subscriptions = db.prepare('SELECT subscribee FROM subscriptions INDEXED BY subscriptions_by_subscriber WHERE subscriber = ?').pluck();
    this.rows = db.prepare('SELECT count(*) FROM subscriptions').pluck();
    this.addAll = db.transaction((pairs: readonly Pair[]) => {
      let added = 0;
      for (const [subscriber, subscribee] of pairs) added += this.insert.run(subscriber, subscribee).changes;
      return added;
    });
    this.removeAll = db.transaction((pairs: readonly Pair[]) => {
      let removed = 0;
      for (const [subscriber, subscribee] of pairs) removed += this.remove.run(subscriber, subscribee).changes;
      return removed;
    });
  }

  addSubscriptions(pairs: readonly Pair[]): number {
    return this.addAll(toPairs(pairs));
  }

  removeSubscriptions(pairs: readonly Pair[]): number {
    return this.removeAll(toPairs(pairs));
  }

  getSubscribers(user: number): number[] {
    return this.subscribers.all(user) as number[];
  }

  getSubscriptions(user: number): number[] {
    return this.subscriptions.all(user) as number[];
  }

  count(): number {
    return this.rows.get() as number;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
