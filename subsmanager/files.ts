import { accessSync, closeSync, constants, existsSync, fchmodSync, fstatSync, ftruncateSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { errorCode } from './errors.js';

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
    if (errorCode(err) !== 'EEXIST') throw err;
  }
}

/**
 * An SQLite file that failed to open, named, with what to do: SQLite's own message
 * ("file is not a database", "attempt to write a readonly database") says neither.
 */
export function openFailure(what: string, path: string, err: unknown): Error {
  const code = String(errorCode(err) ?? '');
  const advice = /^SQLITE_(NOTADB|CORRUPT)/.test(code)
    ? `: it is not an SQLite database, or is damaged; move it (with its -wal and -shm files) away and c1m starts an empty one, or give --db another path`
    : /^SQLITE_(READONLY|CANTOPEN|PERM|AUTH)|^EACCES|^EPERM/.test(code)
      ? `: this process (user ${user()}) cannot write it, or its directory (where its -wal and -shm files go); run c1m as their owner, or fix their permissions`
      : '';
  return new Error(`cannot open ${what} ${path}: ${(err as Error).message}${code && !(err as Error).message.includes(code) ? ` (${code})` : ''}${advice}`);
}

/**
 * Throws (EACCES) when this process may not write an SQLite file: SQLite would open it
 * read-only without a word, and fail at the first write, long after the start.
 */
export function checkWritable(path: string): void {
  if (path !== ':memory:' && path !== '') accessSync(path, constants.W_OK);
}

const user = (): number => process.geteuid?.() ?? 0;

/**
 * Refuses a directory of secrets that someone else could have written into, as ssh refuses ~/.ssh:
 * it must belong to this process's user (or root) and be writable by no one else. Otherwise its
 * files may have been planted or replaced: a known key adopted, a config written through a link.
 */
export function checkPrivateDirectory(dir: string): void {
  const stats = statSync(dir);
  if (!stats.isDirectory()) throw new Error(`${dir} is not a directory`);
  if (stats.uid !== user() && stats.uid !== 0)
    throw new Error(`directory ${dir} belongs to user ${stats.uid}, not to this process's user ${user()}: files in it may have been planted; use a directory of your own`);
  if (stats.mode & 0o022)
    throw new Error(`directory ${dir} may be written by others (mode ${(stats.mode & 0o7777).toString(8)}): files in it may have been planted; chmod go-w ${dir}, or use a directory of your own`);
}

/** Opens with O_NOFOLLOW and checks what was opened: a regular file of this process's user, writable by no one else. */
function openOwn(file: string, flags: number): { fd: number; stats: Stats } {
  let fd: number;
  try {
    fd = openSync(file, flags | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    if (errorCode(err) === 'ELOOP') throw new Error(`${file} is a symbolic link: c1m follows none for the files it keeps secrets in; remove it`);
    throw err;
  }
  const stats = fstatSync(fd);
  const refused = !stats.isFile()
    ? 'is not a regular file'
    : stats.uid !== user()
      ? `belongs to user ${stats.uid}, not to this process's user ${user()}: it may have been planted; remove it if it is not yours`
      : stats.mode & 0o022
        ? `may be written by others (mode ${(stats.mode & 0o777).toString(8)}): chmod go-w ${file}`
        : undefined;
  if (refused) {
    closeSync(fd);
    throw new Error(`${file} ${refused}`);
  }
  return { fd, stats };
}

/** A file this process's user keeps secrets (or their permissions) in, and its mode; undefined when there is none. */
export function readPrivate(file: string): { text: string; mode: number } | undefined {
  let opened;
  try {
    opened = openOwn(file, constants.O_RDONLY);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return { text: readFileSync(opened.fd, 'utf8'), mode: opened.stats.mode & 0o777 };
  } finally {
    closeSync(opened.fd);
  }
}

/** Writes (0600) a file only its owner may read; never through a link, nor over a file someone else owns or may write. */
export function writePrivate(file: string, text: string): void {
  // Truncated only once checked: a file someone else owns is refused intact.
  const { fd } = openOwn(file, constants.O_WRONLY | constants.O_CREAT);
  try {
    fchmodSync(fd, 0o600);
    ftruncateSync(fd);
    writeFileSync(fd, text);
  } finally {
    closeSync(fd);
  }
}
