/**
 * Worker thread of the bulk loader (bulkload.ts): sorts the parsed edges into
 * one table's key order, then either writes them into that table in a scratch
 * database file of its own, closes it and reports the row count (a build), or
 * hands the sorted rows back, their buffers moved rather than copied (a sort,
 * for a store that is serving: its inserts stay on its own connection).
 */
import Database from 'better-sqlite3';
import { parentPort, workerData } from 'node:worker_threads';
import { insertSorted, sortRows, statementRunner, type ParsedEdges, type Rows } from './sortrows.js';
import { TABLES } from './store.js';

export interface SortTask {
  table: keyof typeof TABLES;
  /** Parsed edges; ids lives in a SharedArrayBuffer, read here without a copy. */
  edges: ParsedEdges;
  mutual: boolean;
}

export interface BuildTask extends SortTask {
  /** Scratch database file to create. */
  path: string;
  /** The store's page size, so the copied B-tree pages come out as the store's would. */
  pageSize: number;
}

export type BuildMessage =
  | { type: 'progress'; rows: number }
  | { type: 'done'; rows: number; sortSeconds: number; writeSeconds: number }
  | { type: 'sorted'; rows: Rows; sortSeconds: number };

const task = workerData as SortTask | BuildTask;
const port = parentPort!;
let t = process.hrtime.bigint();
const rows = sortRows(task.edges, task.mutual, task.table === 'subscriptions_by_subscriber');
const sortSeconds = Number(process.hrtime.bigint() - t) / 1e9;
if ('path' in task) build(task);
else port.postMessage({ type: 'sorted', rows, sortSeconds } satisfies BuildMessage, [rows.lead.buffer as ArrayBuffer, rows.follow.buffer as ArrayBuffer]);

function build(task: BuildTask): void {
  t = process.hrtime.bigint();
  const db = new Database(task.path);
  try {
    db.pragma(`page_size = ${task.pageSize}`);
    // No rollback journal and no fsync: safe because this file is scratch, never
    // the store. The loader deletes it after the copy or on any failure, and a crash
    // leaves only a stray file; the store is written only by the copy, in the
    // store's own WAL transaction.
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    // Sorted inserts touch only the right edge of the B-tree.
    db.pragma('cache_size = -16384');
    db.exec(TABLES[task.table]);
    const run = statementRunner(db);
    // One transaction: otherwise every statement would be its own commit.
    const count = db.transaction(() => insertSorted(run, task.table, rows, (done) => port.postMessage({ type: 'progress', rows: done } satisfies BuildMessage)))();
    db.close();
    port.postMessage({ type: 'done', rows: count, sortSeconds, writeSeconds: Number(process.hrtime.bigint() - t) / 1e9 } satisfies BuildMessage);
  } finally {
    if (db.open) db.close();
  }
}
