/**
 * The history's file (subsmanager/history-file.ts) on real SQLite files: a file
 * refused when attached is detached again, so the store can attach its
 * history once the file is fixed, in the same process.
 */
import Database from 'better-sqlite3';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { openStore } from '../index.js';
import { historyPath } from '../subsmanager/history-file.js';
import { tempDir } from './helpers.js';

it('a refused history file is detached: moved away, the store attaches a new history', () => {
  const db = join(tempDir(), 'c1m.db');
  const path = historyPath(db);
  const other = new Database(path);
  other.exec('CREATE TABLE something (a)');
  other.close();
  const store = openStore(db);
  try {
    expect(() => store.history({ seconds: 60, perSubject: 10 })).toThrow(/not a c1m message history/);
    renameSync(path, `${path}.not-ours`);
    const history = store.history({ seconds: 60, perSubject: 10 });
    expect(history.claimLease()).toBeDefined();
    history.close();
  } finally {
    store.close();
  }
});
