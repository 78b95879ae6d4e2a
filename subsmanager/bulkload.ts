import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { SqliteStore } from './store.js';

/**
 * Bulk load of an edge list (`A B` per line) into the subscription store.
 *
 * All or nothing: the whole input is parsed and validated before the database
 * is touched, then written in ONE immediate transaction, so a bad line (or a
 * crash) leaves the store exactly as it was, and a server reading the same file
 * keeps seeing the previous committed state until the commit (WAL).
 *
 * Speed comes from: rows sorted by primary key (subscribee, subscriber), so
 * every insert appends to the right edge of the B-tree; multi-row INSERT
 * statements; and, when the table starts empty, dropping its secondary indexes
 * and rebuilding them after the insert (one sort instead of 30M random index
 * inserts), inside the same transaction.
 *
 * PRAGMAs: the store already runs journal_mode=WAL with synchronous=NORMAL:
 * a process crash never loses a commit nor corrupts the file, a power loss may
 * drop the latest commit, never half of one; readers never block on the
 * loader. The load changes two settings, on its own connection and only while
 * it runs, both about memory and CPU, neither about durability:
 * - cache_size = loadCacheMiB (default 16 MiB) for the inserts: sorted inserts
 *   only touch the right edge of the B-tree. Dirty pages beyond it spill into
 *   the WAL, uncommitted, as usual.
 * - cache_size = 1 MiB and threads = 2 for the index rebuild: the sorter sizes
 *   its in-memory runs from cache_size, and small runs that stay in CPU cache
 *   sort faster than big ones; threads lets it sort runs on a second core
 *   (measured on 30M rows, 16 KiB pages: 16 MiB/1 thread 20 s, 16 MiB/2 threads
 *   19 s, 1 MiB/2 threads 15.5 s, 256 MiB/2 threads 33 s).
 * Measured and left out: temp_store=MEMORY (rebuild 2x slower); keeping the
 * index during the inserts with a 1.5 GiB cache (111 s instead of 15 s of
 * rebuild); INSERT OR FAIL / plain INSERT after de-duplicating in JS, and
 * 1,024-8,192 rows per statement (all within noise of OR IGNORE x 256, about
 * 0.37-0.42 µs per row). Settings that would weaken crash safety or block the
 * server (synchronous=OFF, journal_mode=OFF or MEMORY, locking_mode=EXCLUSIVE)
 * are not used.
 */

export type Direction = 'mutual' | 'one-way';

export interface BulkLoadOptions {
  /** 'mutual' (default): `A B` adds A→B and B→A. 'one-way': `A B` means A subscribes to B. */
  direction?: Direction;
  /** Page cache for the loading connection while it loads, in MiB. */
  loadCacheMiB?: number;
  onProgress?: (progress: LoadProgress) => void;
}

export type LoadProgress =
  | { phase: 'read'; bytes: number; totalBytes?: number }
  | { phase: 'insert'; rows: number; totalRows: number };

export interface LoadReport {
  /** Edge lines read (blank lines not counted). */
  edges: number;
  /** Subscription rows derived from them: edges x 2 when mutual. */
  rowsRead: number;
  /** Rows that were not in the store yet. */
  rowsAdded: number;
  /** Reading, parsing and sorting the input. */
  readSeconds: number;
  /** The database transaction: inserts, index rebuild, commit, checkpoint. */
  writeSeconds: number;
  /** Of writeSeconds: rebuilding the secondary index (0 when the store was not empty). */
  indexSeconds: number;
  /** Of writeSeconds: commit and the checkpoint that folds the WAL into the database file. */
  commitSeconds: number;
  seconds: number;
  rowsPerSecond: number;
}

export class EdgeListError extends Error {
  constructor(
    readonly source: string,
    readonly line: number,
    readonly content: string,
  ) {
    super(`${source}:${line}: expected two positive integers, got ${JSON.stringify(content)}`);
  }
}

/** Loads from a file path, or from standard input when `path` is '-'. */
export async function bulkLoadFile(store: SqliteStore, path: string, options: BulkLoadOptions = {}): Promise<LoadReport> {
  if (path === '-') return bulkLoad(store, process.stdin, 'stdin', options);
  let totalBytes: number;
  try {
    totalBytes = (await stat(path)).size;
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
  return bulkLoad(store, createReadStream(path, { highWaterMark: 1 << 20 }), path, { ...options, totalBytes });
}

/** Loads an edge list from a stream; `source` names it in error messages. */
export async function bulkLoad(
  store: SqliteStore,
  input: Readable,
  source: string,
  options: BulkLoadOptions & { totalBytes?: number } = {},
): Promise<LoadReport> {
  const started = process.hrtime.bigint();
  const edges = await readEdgeList(input, source, (bytes) => options.onProgress?.({ phase: 'read', bytes, totalBytes: options.totalBytes }));
  const rows = toSortedRows(edges, options.direction ?? 'mutual');
  const sorted = process.hrtime.bigint();
  const { added: rowsAdded, indexSeconds, commitSeconds } = insertRows(store, rows, options);
  const done = process.hrtime.bigint();
  const seconds = Number(done - started) / 1e9;
  return {
    edges: edges.count,
    rowsRead: rows.count,
    rowsAdded,
    readSeconds: Number(sorted - started) / 1e9,
    writeSeconds: Number(done - sorted) / 1e9,
    indexSeconds,
    commitSeconds,
    seconds,
    rowsPerSecond: rows.count / seconds,
  };
}

/** Endpoints of edge i at ids[2i], ids[2i + 1]; Float64 holds every safe-integer id exactly. */
interface ParsedEdges {
  ids: Float64Array;
  count: number;
  maxId: number;
}

const MAX_LINE_BYTES = 4096;
const NEWLINE = 0x0a;

async function readEdgeList(input: Readable, source: string, onBytes: (bytes: number) => void): Promise<ParsedEdges> {
  const parser = new EdgeListParser(source);
  let bytes = 0;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      parser.push(chunk);
      bytes += chunk.length;
      onBytes(bytes);
    }
  } catch (err) {
    if (err instanceof EdgeListError) throw err;
    throw new Error(`cannot read ${source}: ${(err as Error).message}`);
  }
  return parser.finish();
}

/** Parses complete lines as chunks arrive; a partial last line waits for the next chunk. */
class EdgeListParser {
  private ids = new Float64Array(1 << 16);
  private count = 0;
  private maxId = 0;
  private line = 0;
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly source: string) {}

  push(chunk: Buffer): void {
    const lastNewline = chunk.lastIndexOf(NEWLINE);
    if (lastNewline < 0) {
      this.pending = Buffer.concat([this.pending, chunk]);
      if (this.pending.length > MAX_LINE_BYTES) this.fail(this.pending);
      return;
    }
    const complete = this.pending.length > 0 ? Buffer.concat([this.pending, chunk.subarray(0, lastNewline + 1)]) : chunk.subarray(0, lastNewline + 1);
    this.parseLines(complete);
    this.pending = Buffer.from(chunk.subarray(lastNewline + 1));
    if (this.pending.length > MAX_LINE_BYTES) this.fail(this.pending);
  }

  finish(): ParsedEdges {
    if (this.pending.length > 0) this.parseLines(Buffer.concat([this.pending, Buffer.of(NEWLINE)]));
    return { ids: this.ids, count: this.count, maxId: this.maxId };
  }

  /** `text` ends with a newline. Accepts `A B` with spaces or tabs around, and CRLF; skips blank lines. */
  private parseLines(text: Buffer): void {
    let i = 0;
    const end = text.length;
    while (i < end) {
      const lineStart = i;
      this.line++;
      let a = 0;
      let b = 0;
      let fields = 0;
      let ok = true;
      let c = text[i];
      while (c !== NEWLINE) {
        if (c === 0x20 || c === 0x09 || c === 0x0d) {
          c = text[++i];
        } else if (c >= 0x30 && c <= 0x39 && fields < 2) {
          let value = 0;
          let digits = 0;
          do {
            value = value * 10 + (c - 0x30);
            digits++;
            c = text[++i];
          } while (c >= 0x30 && c <= 0x39);
          if (fields === 0) a = value;
          else b = value;
          fields++;
          if (digits > 16 || value === 0 || value > Number.MAX_SAFE_INTEGER || !(c === 0x20 || c === 0x09 || c === 0x0d || c === NEWLINE)) ok = false;
        } else {
          ok = false;
          c = text[++i];
        }
      }
      i++;
      if (fields === 0 && ok) continue;
      if (!ok || fields !== 2) this.fail(text.subarray(lineStart, i - 1));
      this.append(a, b);
    }
  }

  private append(a: number, b: number): void {
    if (2 * this.count + 2 > this.ids.length) {
      const grown = new Float64Array(this.ids.length * 2);
      grown.set(this.ids);
      this.ids = grown;
    }
    this.ids[2 * this.count] = a;
    this.ids[2 * this.count + 1] = b;
    this.count++;
    if (a > this.maxId) this.maxId = a;
    if (b > this.maxId) this.maxId = b;
  }

  private fail(lineBytes: Buffer): never {
    const shown = lineBytes.subarray(0, 200).toString('utf8').replace(/\r$/, '');
    throw new EdgeListError(this.source, this.line + (lineBytes === this.pending ? 1 : 0), lineBytes.length > 200 ? `${shown}…` : shown);
  }
}

/** Rows to insert, in insert order: row i is subscribers[i] subscribing to subscribees[i]. */
interface Rows {
  subscribees: Float64Array | Uint32Array;
  subscribers: Float64Array | Uint32Array;
  count: number;
}

/**
 * Counting sort by subscribee when ids are dense enough for a per-id counter
 * array (the usual case: ids 1..N), then each subscribee's few subscribers
 * sorted in place. Only the subscribers are scattered; the subscribees are
 * written in order afterwards, and ids below 2^32 go in Uint32Arrays: half the
 * random writes into half the memory of scattering both as Float64 (sorting
 * 30M rows: 1.6 s instead of 3.2 s). Sparse huge ids are inserted in input
 * order instead: still correct, only slower.
 */
function toSortedRows(edges: ParsedEdges, direction: Direction): Rows {
  const { ids, count: edgeCount, maxId } = edges;
  const mutual = direction === 'mutual';
  const count = mutual ? 2 * edgeCount : edgeCount;
  // Edge `A B` is row (subscriber A, subscribee B); mutual adds (B, A).
  if (maxId > Math.max(1 << 20, 8 * count)) {
    const subscribees = new Float64Array(count);
    const subscribers = new Float64Array(count);
    for (let e = 0, row = 0; e < edgeCount; e++) {
      subscribers[row] = ids[2 * e];
      subscribees[row++] = ids[2 * e + 1];
      if (mutual) {
        subscribers[row] = ids[2 * e + 1];
        subscribees[row++] = ids[2 * e];
      }
    }
    return { subscribees, subscribers, count };
  }
  const narrow = maxId <= 0xffffffff;
  const subscribees = narrow ? new Uint32Array(count) : new Float64Array(count);
  const subscribers = narrow ? new Uint32Array(count) : new Float64Array(count);
  const start = new Uint32Array(maxId + 2);
  for (let e = 0; e < edgeCount; e++) {
    start[ids[2 * e + 1] + 1]++;
    if (mutual) start[ids[2 * e] + 1]++;
  }
  for (let id = 1; id <= maxId + 1; id++) start[id] += start[id - 1];
  const next = start.slice(0, maxId + 1);
  for (let e = 0; e < edgeCount; e++) {
    const a = ids[2 * e];
    const b = ids[2 * e + 1];
    subscribers[next[b]++] = a;
    if (mutual) subscribers[next[a]++] = b;
  }
  for (let id = 1; id <= maxId; id++) {
    const from = start[id];
    const to = start[id + 1];
    if (to > from) {
      subscribees.fill(id, from, to);
      sortRange(subscribers, from, to);
    }
  }
  return { subscribees, subscribers, count };
}

/** Insertion sort for the many short runs; the typed array's native sort for hubs. */
function sortRange(values: Float64Array | Uint32Array, from: number, to: number): void {
  if (to - from > 32) {
    values.subarray(from, to).sort();
    return;
  }
  for (let i = from + 1; i < to; i++) {
    const value = values[i];
    let j = i - 1;
    while (j >= from && values[j] > value) {
      values[j + 1] = values[j];
      j--;
    }
    values[j + 1] = value;
  }
}

/** Rows bound per INSERT: amortises the statement's per-call cost, well under SQLite's 32,766 variables. */
const ROWS_PER_STATEMENT = 256;
const PROGRESS_EVERY_STATEMENTS = 1024;

/** Page cache while the secondary index is rebuilt: the sorter's in-memory run size. */
const INDEX_CACHE_MIB = 1;
/** Sorter threads while the index is rebuilt: the loader's thread plus one more. */
const INDEX_SORT_THREADS = 2;

function insertRows(store: SqliteStore, rows: Rows, options: BulkLoadOptions): { added: number; indexSeconds: number; commitSeconds: number } {
  const { db } = store;
  const cacheBefore = db.pragma('cache_size', { simple: true });
  const threadsBefore = db.pragma('threads', { simple: true });
  let indexSeconds = 0;
  let commitStarted = 0n;
  db.pragma(`cache_size = ${-Math.round((options.loadCacheMiB ?? 16) * 1024)}`);
  const multiRowSql = (n: number): string => `INSERT OR IGNORE INTO subscriptions (subscribee, subscriber) VALUES ${'(?, ?), '.repeat(n - 1)}(?, ?)`;
  const batch = db.prepare(multiRowSql(ROWS_PER_STATEMENT));
  const params: number[] = new Array(2 * ROWS_PER_STATEMENT).fill(0);
  const { subscribees, subscribers, count } = rows;
  const load = db.transaction((): number => {
    const empty = db.prepare('SELECT 1 FROM subscriptions LIMIT 1').get() === undefined;
    const indexes = empty ? (db.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'subscriptions' AND sql IS NOT NULL").all() as { name: string; sql: string }[]) : [];
    for (const { name } of indexes) db.exec(`DROP INDEX "${name.replaceAll('"', '""')}"`);
    let added = 0;
    let row = 0;
    let statements = 0;
    for (; row + ROWS_PER_STATEMENT <= count; row += ROWS_PER_STATEMENT) {
      for (let k = 0; k < ROWS_PER_STATEMENT; k++) {
        params[2 * k] = subscribees[row + k];
        params[2 * k + 1] = subscribers[row + k];
      }
      added += batch.run(params).changes;
      if (++statements % PROGRESS_EVERY_STATEMENTS === 0) options.onProgress?.({ phase: 'insert', rows: row, totalRows: count });
    }
    const rest = count - row;
    if (rest > 0) {
      const tail: number[] = [];
      for (let k = row; k < count; k++) tail.push(subscribees[k], subscribers[k]);
      added += db.prepare(multiRowSql(rest)).run(tail).changes;
    }
    if (indexes.length > 0) {
      const indexStarted = process.hrtime.bigint();
      db.pragma(`cache_size = ${-INDEX_CACHE_MIB * 1024}`);
      db.pragma(`threads = ${INDEX_SORT_THREADS}`);
      for (const { sql } of indexes) db.exec(sql);
      indexSeconds = Number(process.hrtime.bigint() - indexStarted) / 1e9;
    }
    commitStarted = process.hrtime.bigint();
    return added;
  });
  try {
    const added = load.immediate();
    options.onProgress?.({ phase: 'insert', rows: count, totalRows: count });
    // Fold the load's WAL (as big as the data) back into the main file and shrink it;
    // with readers still on an older snapshot it reports busy after busy_timeout and the WAL waits for a later checkpoint.
    db.pragma('wal_checkpoint(TRUNCATE)');
    return { added, indexSeconds, commitSeconds: Number(process.hrtime.bigint() - commitStarted) / 1e9 };
  } finally {
    db.pragma(`cache_size = ${cacheBefore}`);
    db.pragma(`threads = ${threadsBefore}`);
  }
}
