import { readFileSync } from 'node:fs';

/**
 * The soft open-file limit of this process, read at run time: it decides how
 * many sockets one process may hold. Infinity where /proc is not available.
 */
export function openFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s+/)[3];
    return soft === undefined || soft === 'unlimited' ? Infinity : Number(soft);
  } catch {
    return Infinity;
  }
}

/** File descriptors kept back for listeners, the database, logs and the backend API. */
export const RESERVED_FDS = 100;
