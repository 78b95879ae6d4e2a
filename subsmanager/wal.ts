import type Database from 'better-sqlite3';

/**
 * PRAGMA journal_mode=WAL fails at once with SQLITE_BUSY, without waiting,
 * while another connection holds the file's lock: two processes opening the
 * same new file (the routers of one cluster) would see one of them fail. It
 * is retried for up to 5 s, like any other busy lock at open.
 */
export function enableWal(db: Database.Database, schema = 'main'): void {
  const deadline = Date.now() + 5000;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      db.pragma(`${schema}.journal_mode = WAL`);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() > deadline) throw err;
      Atomics.wait(pause, 0, 0, 10); // better-sqlite3 is synchronous: so is the wait
    }
  }
}
