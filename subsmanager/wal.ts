import type Database from 'better-sqlite3';
import { errorCode } from './errors.js';

/**
 * Runs `open` again while it fails with SQLITE_BUSY, for up to 5 s, like any
 * other busy lock at open. Some steps of opening a file fail at once,
 * without SQLite's busy handler, while another connection holds its lock:
 * PRAGMA journal_mode=WAL, and reads of a file whose write-ahead log another
 * process is setting up. Two processes opening the same new file (the
 * routers of one cluster) would see one of them fail.
 */
export function retryBusy<T>(open: () => T): T {
  const deadline = Date.now() + 5000;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      return open();
    } catch (err) {
      if (!String(errorCode(err)).startsWith('SQLITE_BUSY') || Date.now() > deadline) throw err;
      Atomics.wait(pause, 0, 0, 10); // better-sqlite3 is synchronous: so is the wait
    }
  }
}

export function enableWal(db: Database.Database, schema = 'main'): void {
  retryBusy(() => db.pragma(`${schema}.journal_mode = WAL`));
}
