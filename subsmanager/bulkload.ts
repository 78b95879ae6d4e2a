import { createReadStream, rmSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { setImmediate } from 'node:timers/promises';
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import type { BuildMessage, BuildTask, SortTask } from './bulkload-worker.js';
import { insertSorted, ROWS_PER_STATEMENT, sortRows, statementRunner, type ParsedEdges } from './sortrows.js';
import type { SqliteStore } from './store.js';

/**
 * Bulk load of an edge list (`A B` per line) into the subscription store.
 *
 * All or nothing: the whole input is parsed and validated before anything is
 * written, then the store is written in ONE immediate transaction, so a bad
 * line (or a crash) leaves the store exactly as it was, and a server reading
 * the same file keeps seeing the previous committed state until the commit.
 *
 * Into an EMPTY store (both tables empty; the usual first load), the fast path:
 * 1. build: two worker threads each sort the parsed ids (shared through a
 *    SharedArrayBuffer, not copied) into one table's key order and insert them
 *    into that table in a scratch database file next to the store
 *    (`<store>.load-<pid>-a` and `-b`), in parallel on two cores;
 * 2. copy: the main connection attaches both and runs
 *    `INSERT INTO t SELECT * FROM scratch.t` per table in one transaction.
 *    The scratch tables have exactly the live tables' shape, so SQLite's
 *    transfer optimization copies the records as they are, in key order,
 *    without decoding them or checking uniqueness (30M rows: ~4 s per table,
 *    against ~14 s of multi-row inserts).
 * Then commit, detach, delete the scratch files (also on any failure), and
 * checkpoint the WAL into the store file.
 *
 * Into a non-empty store: sorted multi-row INSERT OR IGNORE into both tables
 * (each in its own key order, so inserts land close together) in one
 * immediate transaction.
 *
 * PRAGMAs and crash safety. The store runs journal_mode=WAL with
 * synchronous=NORMAL and the load changes neither: the copy or the inserts go
 * through the WAL as one transaction, so a crash at any point leaves the last
 * committed state (a process crash never loses a commit; a power loss may drop
 * the latest commit, never half of one), and readers never block on the loader.
 * The scratch files run journal_mode=OFF and synchronous=OFF (no rollback
 * journal, no fsync): they are throwaway copies, deleted on success and on
 * failure, never read by anything but the copy, so a crash mid-build costs
 * nothing but a stray file. On the loading connection, only while it loads:
 * cache_size = loadCacheMiB (default 16 MiB): sorted inserts and the copy only
 * touch the right edge of each B-tree; dirty pages beyond it spill into the
 * WAL, uncommitted, as usual.
 * Settings that would weaken the store's crash safety or block the server
 * (synchronous=OFF, journal_mode=OFF or MEMORY, locking_mode=EXCLUSIVE on the
 * store) are not used.
 */

export type Direction = 'mutual' | 'one-way';

export interface BulkLoadOptions {
  /** 'mutual' (default): `A B` adds A→B and B→A. 'one-way': `A B` means A subscribes to B. */
  direction?: Direction;
  /** Page cache for the loading connection while it loads, in MiB. */
  loadCacheMiB?: number;
  onProgress?: (progress: LoadProgress) => void;
}

/**
 * read: bytes of input parsed. Then, into an empty store, build (rows written
 * into the scratch tables, both together: totalRows is twice the rows) and
 * copy (start and end only: one SQL statement per table); into a non-empty
 * store, insert (rows inserted into both tables: also twice the rows).
 */
export type LoadProgress =
  | { phase: 'read'; bytes: number; totalBytes?: number }
  | { phase: 'build' | 'copy' | 'insert'; rows: number; totalRows: number };

export interface LoadReport {
  /** Edge lines read (blank lines not counted). */
  edges: number;
  /** Subscription rows derived from them: edges x 2 when mutual. */
  rowsRead: number;
  /** Rows that were not in the store yet. */
  rowsAdded: number;
  /** Reading and parsing the input; into a non-empty store also sorting it. */
  readSeconds: number;
  /** Everything after reading: build, copy or insert, commit, checkpoint. */
  writeSeconds: number;
  /** Of writeSeconds: building the scratch tables in parallel (0 into a non-empty store). */
  buildSeconds: number;
  /** Of buildSeconds: the slower worker's sort. */
  buildSortSeconds: number;
  /** Of writeSeconds: the copy from the scratch tables, or the inserts into a non-empty store. */
  copySeconds: number;
  /** Of writeSeconds: commit and the checkpoint that folds the WAL into the database file. */
  commitSeconds: number;
  /** Whether the empty-store path (parallel build + copy) ran. */
  parallelBuild: boolean;
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

interface WriteResult {
  added: number;
  buildSeconds: number;
  buildSortSeconds: number;
  copySeconds: number;
  commitSeconds: number;
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
  const report = await loadEdges(store, edges, options);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { ...report, readSeconds: report.readSeconds + (seconds - report.seconds), seconds, rowsPerSecond: report.rowsRead / seconds };
}

/**
 * Loads parsed edges (readEdgeList, or a replicated store's changes: cluster/store-log.ts). `inTransaction` runs in
 * the load's one transaction, after its rows: a replicated store's view records there the last change it applied.
 */
export async function loadEdges(store: SqliteStore, edges: ParsedEdges, options: BulkLoadOptions & { inTransaction?: () => void } = {}): Promise<LoadReport> {
  const started = process.hrtime.bigint();
  const mutual = (options.direction ?? 'mutual') === 'mutual';
  const rowCount = mutual ? 2 * edges.count : edges.count;
  const { db } = store;
  const cacheBefore = db.pragma('cache_size', { simple: true });
  db.pragma(`cache_size = ${-Math.round((options.loadCacheMiB ?? 16) * 1024)}`);
  let read = 0n;
  let result: WriteResult;
  let parallelBuild = false;
  try {
    const file = storeFile(store);
    parallelBuild = file !== '' && isEmpty(store);
    if (parallelBuild) {
      read = process.hrtime.bigint();
      result = await buildAndCopy(store, file, edges, mutual, rowCount, options);
    } else {
      const rows = [sortRows(edges, mutual, false), sortRows(edges, mutual, true)] as const;
      read = process.hrtime.bigint();
      result = insertRows(store, rows, options);
    }
  } finally {
    db.pragma(`cache_size = ${cacheBefore}`);
  }
  const done = process.hrtime.bigint();
  const seconds = Number(done - started) / 1e9;
  return {
    edges: edges.count,
    rowsRead: rowCount,
    rowsAdded: result.added,
    readSeconds: Number(read - started) / 1e9,
    writeSeconds: Number(done - read) / 1e9,
    buildSeconds: result.buildSeconds,
    buildSortSeconds: result.buildSortSeconds,
    copySeconds: result.copySeconds,
    commitSeconds: result.commitSeconds,
    parallelBuild,
    seconds,
    rowsPerSecond: rowCount / seconds,
  };
}

/** How long a slice of a serving store's load holds the event loop (and the store's write lock), about. */
const SLICE_MS = 20;
/** Rows inserted between two looks at the clock within a slice. */
const SLICE_STEP_ROWS = 8 * ROWS_PER_STATEMENT;

/**
 * Loads parsed edges into a store that is serving (a replicated store's view that has caught up:
 * cluster/store-log.ts), without holding its event loop for long: two workers sort the rows, then they are
 * inserted on the store's own connection in transactions of about SLICE_MS each, yielding to the event loop
 * between them, so that lookups, sends and the history's writes on that connection go on meanwhile. They may
 * see part of the load: one table ahead of the other, or some of a table's rows. Not all or nothing: stopped
 * halfway, the slices committed stay (loading the same edges again adds the rest, as adding a pair twice changes
 * nothing); `inTransaction` runs in the last slice's transaction only. Returns the rows added.
 */
export async function loadEdgesInSlices(store: SqliteStore, edges: ParsedEdges, options: { direction?: Direction; inTransaction?: () => void } = {}): Promise<number> {
  const mutual = (options.direction ?? 'mutual') === 'mutual';
  const tables = ['subscriptions', 'subscriptions_by_subscriber'] as const;
  const sorted = await runWorkers(tables.map((table) => ({ table, edges, mutual })));
  const { db } = store;
  const run = statementRunner(db);
  let added = 0;
  for (const [t, table] of tables.entries()) {
    const { lead, follow, count } = sorted[t].rows;
    let row = 0;
    do {
      const slice = db.transaction(() => {
        const until = performance.now() + SLICE_MS;
        let inserted = 0;
        while (row < count && performance.now() < until) {
          const end = Math.min(row + SLICE_STEP_ROWS, count);
          inserted += insertSorted(run, table, { lead: lead.subarray(row, end), follow: follow.subarray(row, end), count: end - row });
          row = end;
        }
        if (row === count && t === tables.length - 1) options.inTransaction?.();
        return inserted;
      });
      const inserted = slice.immediate();
      // The count comes from the primary table, as a store's own adds count.
      if (table === 'subscriptions') added += inserted;
      if (row < count || t < tables.length - 1) await setImmediate();
    } while (row < count);
  }
  return added;
}

/** The store's main file, '' for an in-memory or temporary database (no directory for scratch files: plain inserts then). */
function storeFile(store: SqliteStore): string {
  const main = (store.db.pragma('database_list') as { name: string; file: string }[]).find((d) => d.name === 'main');
  return main?.file ?? '';
}

function isEmpty(store: SqliteStore): boolean {
  return store.db.prepare('SELECT NOT EXISTS (SELECT 1 FROM subscriptions) AND NOT EXISTS (SELECT 1 FROM subscriptions_by_subscriber)').pluck().get() === 1;
}

/**
 * The compiled worker. Under vitest this module runs from its .ts source, which a
 * worker thread cannot load on Node 20, so it takes the build's copy (the tests
 * run after `tsc`).
 */
const WORKER_URL = import.meta.url.endsWith('.ts') ? new URL('../dist/subsmanager/bulkload-worker.js', import.meta.url) : new URL('./bulkload-worker.js', import.meta.url);

/** Scratch tables: one per live table, same name, built by one worker each. */
const SCRATCH = [
  { table: 'subscriptions', schema: 'c1m_load_a', suffix: 'a' },
  { table: 'subscriptions_by_subscriber', schema: 'c1m_load_b', suffix: 'b' },
] as const;

async function buildAndCopy(
  store: SqliteStore,
  file: string,
  edges: ParsedEdges,
  mutual: boolean,
  rowCount: number,
  options: BulkLoadOptions & { inTransaction?: () => void },
): Promise<WriteResult> {
  const { db } = store;
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const scratch = SCRATCH.map((s) => ({ ...s, path: `${file}.load-${process.pid}-${s.suffix}` }));
  const attached: string[] = [];
  let result: WriteResult;
  let commitStarted = 0n;
  try {
    // A leftover of an earlier process that had our pid and crashed mid-load.
    for (const { path } of scratch) rmSync(path, { force: true });
    let t = process.hrtime.bigint();
    const built = await runWorkers(
      scratch.map(({ path, table }) => ({ path, table, pageSize, edges, mutual })),
      (rows) => options.onProgress?.({ phase: 'build', rows, totalRows: 2 * rowCount }),
    );
    const buildSeconds = Number(process.hrtime.bigint() - t) / 1e9;
    t = process.hrtime.bigint();
    for (const { path, schema } of scratch) {
      db.prepare(`ATTACH ? AS ${schema}`).run(path);
      attached.push(schema);
    }
    const copy = db.transaction((): number => {
      // Re-checked under the write lock: another writer may have added rows since.
      // Then the plain INSERT could hit duplicates; OR IGNORE merges instead (slower).
      const verb = isEmpty(store) ? 'INSERT' : 'INSERT OR IGNORE';
      options.onProgress?.({ phase: 'copy', rows: 0, totalRows: 2 * rowCount });
      let added = 0;
      for (const { table, schema } of scratch) {
        // Exactly this form (no column list, WHERE, ORDER BY) between tables of the same shape is what the transfer optimization needs.
        const changes = db.prepare(`${verb} INTO main.${table} SELECT * FROM ${schema}.${table}`).run().changes;
        if (table === 'subscriptions') added = changes;
      }
      options.inTransaction?.();
      commitStarted = process.hrtime.bigint();
      return added;
    });
    const added = copy.immediate();
    const copySeconds = Number(commitStarted - t) / 1e9;
    options.onProgress?.({ phase: 'copy', rows: 2 * rowCount, totalRows: 2 * rowCount });
    result = { added, buildSeconds, buildSortSeconds: Math.max(...built.map((b) => b.sortSeconds)), copySeconds, commitSeconds: 0 };
  } finally {
    // Always, after an error too (the workers have exited by now, see runWorkers).
    for (const schema of attached) db.exec(`DETACH ${schema}`);
    for (const { path } of scratch) rmSync(path, { force: true });
  }
  checkpoint(store);
  result.commitSeconds = Number(process.hrtime.bigint() - commitStarted) / 1e9;
  return result;
}

type WorkerResult<T extends SortTask> = Extract<BuildMessage, { type: T extends BuildTask ? 'done' : 'sorted' }>;

/** Runs one worker per task; settles once all have exited (a failure stops the others first) with each one's result. */
async function runWorkers<T extends SortTask>(tasks: T[], onRows?: (rows: number) => void): Promise<WorkerResult<T>[]> {
  const workers = tasks.map((task) => new Worker(WORKER_URL, { workerData: task }));
  const progress = tasks.map(() => 0);
  const what = (task: SortTask) => ('path' in task ? `build ${task.path as string}` : `sort the rows of ${task.table}`);
  const results = workers.map(
    (worker, i) =>
      new Promise<WorkerResult<T>>((resolve, reject) => {
        let result: WorkerResult<T> | undefined;
        worker.on('message', (message: BuildMessage) => {
          if (message.type !== 'progress') {
            result = message as WorkerResult<T>;
            return;
          }
          progress[i] = message.rows;
          try {
            onRows?.(progress.reduce((a, b) => a + b, 0));
          } catch (err) {
            reject(err);
          }
        });
        worker.on('error', (err) => reject(new Error(`cannot ${what(tasks[i])}: ${err.message}`)));
        worker.on('exit', (code) => (result ? resolve(result) : reject(new Error(`cannot ${what(tasks[i])}: worker exited with code ${code}`))));
      }),
  );
  try {
    return await Promise.all(results);
  } finally {
    // On success all have exited already; on a failure this stops the others.
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

/** Into a non-empty store: both tables, each in its key order, in one immediate transaction. */
function insertRows(
  store: SqliteStore,
  rows: readonly [ReturnType<typeof sortRows>, ReturnType<typeof sortRows>],
  options: BulkLoadOptions & { inTransaction?: () => void },
): WriteResult {
  const { db } = store;
  const run = statementRunner(db);
  const total = rows[0].count + rows[1].count;
  const started = process.hrtime.bigint();
  let commitStarted = 0n;
  const load = db.transaction((): number => {
    const added = insertSorted(run, 'subscriptions', rows[0], (done) => options.onProgress?.({ phase: 'insert', rows: done, totalRows: total }));
    insertSorted(run, 'subscriptions_by_subscriber', rows[1], (done) => options.onProgress?.({ phase: 'insert', rows: rows[0].count + done, totalRows: total }));
    options.inTransaction?.();
    commitStarted = process.hrtime.bigint();
    return added;
  });
  const added = load.immediate();
  checkpoint(store);
  return {
    added,
    buildSeconds: 0,
    buildSortSeconds: 0,
    copySeconds: Number(commitStarted - started) / 1e9,
    commitSeconds: Number(process.hrtime.bigint() - commitStarted) / 1e9,
  };
}

/**
 * Folds the load's WAL (as big as the data) back into the main file and shrinks it;
 * with readers still on an older snapshot it reports busy after busy_timeout and
 * the WAL waits for a later checkpoint.
 */
function checkpoint(store: SqliteStore): void {
  store.db.pragma('wal_checkpoint(TRUNCATE)');
}

/** Shared, so the build workers read the parsed ids without a copy. */
function sharedFloat64Array(length: number): Float64Array {
  return new Float64Array(new SharedArrayBuffer(length * Float64Array.BYTES_PER_ELEMENT));
}

const MAX_LINE_BYTES = 4096;
const NEWLINE = 0x0a;

/** Reads and checks a whole edge list (`A B` lines); a bad line throws EdgeListError with its number. */
export async function readEdgeList(input: Readable, source: string, onBytes: (bytes: number) => void): Promise<ParsedEdges> {
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

/** Edges collected one by one into shared memory (the build workers read it without a copy), growing as needed. */
export class EdgeBuffer {
  private ids = sharedFloat64Array(1 << 16);
  private edges = 0;
  private maxId = 0;

  get count(): number {
    return this.edges;
  }

  /** `a` subscribes to `b`: positive safe integers, checked by the caller. */
  append(a: number, b: number): void {
    if (2 * this.edges + 2 > this.ids.length) {
      const grown = sharedFloat64Array(this.ids.length * 2);
      grown.set(this.ids);
      this.ids = grown;
    }
    this.ids[2 * this.edges] = a;
    this.ids[2 * this.edges + 1] = b;
    this.edges++;
    if (a > this.maxId) this.maxId = a;
    if (b > this.maxId) this.maxId = b;
  }

  finish(): ParsedEdges {
    return { ids: this.ids, count: this.edges, maxId: this.maxId };
  }
}

/** Parses complete lines as chunks arrive; a partial last line waits for the next chunk. */
class EdgeListParser {
  private readonly edges = new EdgeBuffer();
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
    return this.edges.finish();
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
      this.edges.append(a, b);
    }
  }

  private fail(lineBytes: Buffer): never {
    const shown = lineBytes.subarray(0, 200).toString('utf8').replace(/\r$/, '');
    throw new EdgeListError(this.source, this.line + (lineBytes === this.pending ? 1 : 0), lineBytes.length > 200 ? `${shown}…` : shown);
  }
}
