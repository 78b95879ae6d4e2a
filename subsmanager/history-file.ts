/**
 * The message history's file (see history.ts): where it lives beside the
 * store (`<store>.history.db`, one per partition), its layout and its
 * upgrades, and its attachment to the store's connection, so that a replay
 * joins its rows with the subscriptions in one query. The store's 16 KiB
 * pages suit its bulk load, but a commit writes whole pages to the WAL: the
 * history's 4 KiB pages write a quarter of the bytes per message committed.
 * Checkpoints run in a worker thread (./checkpointer.ts): in the connection
 * that commits they would stall every stream for milliseconds at a time.
 */
import Database from 'better-sqlite3';
import { existsSync, statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { checkWritable, createPrivately, openFailure } from './files.js';
import { enableWal, retryBusy } from './wal.js';

const HISTORY_PAGE_SIZE = 4096;
/** Layout version of the history file, in its PRAGMA user_version: 2 added history_keys (a file of 1 gets it when opened). */
const HISTORY_VERSION = 2;

/** history_floor's row for pruning by age, which takes every subject's rows. */
export const EVERY_SUBJECT = 0;

const historyTables = (h: string) => `CREATE TABLE ${h}.history (
  id INTEGER PRIMARY KEY,
  subject INTEGER NOT NULL,
  at INTEGER NOT NULL,
  body BLOB NOT NULL
);
CREATE INDEX ${h}.history_by_subject ON history (subject, id);
CREATE TABLE ${h}.history_floor (
  subject INTEGER PRIMARY KEY,
  through INTEGER NOT NULL
) WITHOUT ROWID;`;

/**
 * The idempotency keys of the messages sent with one (see IDEMPOTENCY_KEY in history.ts), each with its message's id: written in the
 * transaction that writes the message, pruned by age alone (not by the count per subject), so that a key is
 * remembered for the whole window, as JetStream's duplicate window does on a replicated history.
 */
const keyTable = (h: string) => `CREATE TABLE ${h}.history_keys (
  id INTEGER PRIMARY KEY,
  subject INTEGER NOT NULL,
  key TEXT NOT NULL,
  at INTEGER NOT NULL,
  UNIQUE (subject, key)
);`;

/** A view's place in its stream: the stream's epoch (its ids' offset) and the last id it holds, rows or not (a term marker). */
const streamTable = (h: string) => `CREATE TABLE IF NOT EXISTS ${h}.stream (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  epoch INTEGER NOT NULL,
  through INTEGER NOT NULL
)`;

/**
 * Ids of a new history start at its creation time in µs, and its floor just
 * below: an id from another or a wiped store is then below the floor or above
 * the last id, never mistaken for one of this store's.
 */
const firstHistoryFloor = (now = Date.now()): number => now * 1000;

/** `data/c1m.db` → `data/c1m.history.db`; partition 1 of 2 (see partitions.ts) → `data/c1m.history.1-of-2.db`, so that a cluster of another P never reads these files. */
export const historyPath = (storePath: string, partition = 0, partitions = 1): string =>
  storePath === ':memory:' || storePath === '' ? ':memory:' : `${storePath.replace(/\.db$/, '')}.history${partitions === 1 ? '' : `.${partition}-of-${partitions}`}.db`;

/** The size of a store's history on disk (the file and its write-ahead log) and the messages it keeps; undefined when it has none. */
export function historyOnDisk(storePath: string): { bytes: number; messages: number } | undefined {
  const path = historyPath(storePath);
  if (path === ':memory:' || !existsSync(path)) return undefined;
  const bytes = ['', '-wal'].reduce((n, suffix) => n + (existsSync(path + suffix) ? statSync(path + suffix).size : 0), 0);
  const file = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return { bytes, messages: file.prepare('SELECT count(*) FROM history').pluck().get() as number };
  } finally {
    file.close();
  }
}

const CHECKPOINTER_URL = import.meta.url.endsWith('.ts') ? new URL('../dist/subsmanager/checkpointer.js', import.meta.url) : new URL('./checkpointer.js', import.meta.url);

/** Which history file: a partition's of several (see partitions.ts; default 0 of 1), and whether it is a replicated stream's view. */
export interface HistoryFileOptions {
  partition?: number;
  partitions?: number;
  /**
   * The file is a router's local view of a replicated stream (cluster/replicated-history.ts): ids are the stream's,
   * rows are written once the stream has them (History.committed), and the stream, not the SQLite lease, fences the
   * numbering. The file keeps its place in the stream too.
   */
  replicated?: boolean;
}

/**
 * Attaches the history beside the store whose connection this is (creating or upgrading it if needed) as schema `h` of
 * that connection, or `h<p>` for partition p of several: one connection joins each partition's rows with the
 * subscriptions. `open` makes the history over it, with the worker that checkpoints both files (none in memory); a
 * failure detaches the file and says which one.
 */
export function attachHistoryFile<T>(db: Database.Database, options: HistoryFileOptions, open: (h: string, checkpointer?: Worker) => T): T {
  const partitions = options.partitions ?? 1;
  const path = historyPath(db.name, options.partition, partitions);
  const h = partitions === 1 ? 'h' : `h${options.partition ?? 0}`;
  if (!db.readonly) createPrivately(path);
  let attached = false;
  try {
    if (!db.readonly) checkWritable(path);
    db.prepare(`ATTACH DATABASE ? AS ${h}`).run(path);
    attached = true;
    // A sibling router may be creating the same new file: its steps that fail at once while it does are retried.
    retryBusy(() => {
      db.pragma(`${h}.page_size = ${HISTORY_PAGE_SIZE}`); // a new file only
      if (path !== ':memory:') enableWal(db, h);
      upgrade(db, h);
      if (options.replicated) db.exec(streamTable(h));
      // The worker checkpoints both files; here, a commit never does.
      if (path !== ':memory:') db.pragma('wal_autocheckpoint = 0');
    });
    return open(h, path === ':memory:' ? undefined : new Worker(CHECKPOINTER_URL, { workerData: { store: db.name, history: path } }));
  } catch (err) {
    if (attached) db.prepare(`DETACH DATABASE ${h}`).run();
    throw openFailure('message history', path, err);
  }
}

/** Brings schema `h` to HISTORY_VERSION: the tables of a new file, the keys' table of a file of 1; refuses a newer file, or one that is not a history. */
function upgrade(db: Database.Database, h: string): void {
  const version = db.pragma(`${h}.user_version`, { simple: true }) as number;
  if (version > HISTORY_VERSION) throw new Error(`it has layout version ${version}, newer than this c1m's ${HISTORY_VERSION}; upgrade c1m`);
  if (version === HISTORY_VERSION) return;
  db.transaction(() => {
    const now = db.pragma(`${h}.user_version`, { simple: true }) as number;
    if (now === HISTORY_VERSION) return;
    if (now === 0) {
      if (db.prepare(`SELECT count(*) FROM ${h}.sqlite_master`).pluck().get() !== 0) throw new Error('not a c1m message history');
      db.exec(historyTables(h));
      db.prepare(`INSERT INTO ${h}.history_floor (subject, through) VALUES (${EVERY_SUBJECT}, ?)`).run(firstHistoryFloor());
    }
    db.exec(keyTable(h));
    db.pragma(`${h}.user_version = ${HISTORY_VERSION}`);
  }).immediate();
}
