/**
 * Worker thread of the message history (history.ts): checkpoints the store's
 * and the history's write-ahead logs in a connection of its own, so that the
 * connection that commits every send never stalls on one. PASSIVE: it takes
 * what readers and the writer leave free and never waits for them.
 */
import Database from 'better-sqlite3';
import { workerData } from 'node:worker_threads';

const { store, history } = workerData as { store: string; history: string };
const CHECKPOINT_MS = 200;

const db = new Database(store);
db.prepare('ATTACH DATABASE ? AS h').run(history);
setInterval(() => {
  try {
    db.pragma('main.wal_checkpoint(PASSIVE)');
    db.pragma('h.wal_checkpoint(PASSIVE)');
  } catch {
    // SQLITE_BUSY: a bulk load holds the file; the next round catches up.
  }
}, CHECKPOINT_MS);
