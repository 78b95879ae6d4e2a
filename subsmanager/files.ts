import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Makes a store file that does not exist yet readable by its owner only (and
 * its directory, if made here): the subscriptions and the kept messages are
 * users' data. SQLite then opens the empty file, and gives its write-ahead log
 * and shared-memory files the same mode. A file that exists is left as it is.
 */
export function createPrivately(path: string): void {
  if (path === ':memory:' || path === '' || existsSync(path)) return;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(path, 'wx', 0o600));
  } catch (err) {
    // Another process (a second router starting on the same new store) made it first.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}
