/**
 * The subscription store of a replicated cluster (issue 28, step 2): its
 * changes are the messages of one JetStream stream, replicated on R
 * nats-servers, and every router applies them, in order, to its own SQLite
 * file: its view, which answers every lookup as a store does alone.
 *
 * Exactly once: the view keeps the stream it is a view of and the last
 * sequence it applied in a table of its own (store_log_applied), written in
 * the same transaction as each change; a router restarted applies from there,
 * an empty view from the start. Consecutive bulk-load messages waiting to be
 * applied (a rebuild, a load arriving faster than it is applied) go in one
 * transaction through the bulk loader, whose fast path builds an empty view
 * (subsmanager/bulkload.ts); once the view has caught up, and its router
 * serves, in short transactions that yield to the event loop between them.
 *
 * A write is answered once the stream acknowledged it AND this router's view
 * applied it, with the count the apply computed: a client reads its own
 * write on the router it wrote to; other routers apply it as their consumers
 * deliver it. A message that is not a change (published by hand) is logged,
 * counted and skipped by every view alike: stopping would stop every
 * router's store for good, and skipping keeps the views identical.
 */
import { DeliverPolicy, DiscardPolicy, jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError, StorageType, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg, type StreamInfo } from '@nats-io/jetstream';
import { nuid, type NatsConnection } from '@nats-io/transport-node';
import type Database from 'better-sqlite3';
import { existsSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { EdgeBuffer, loadEdges, loadEdgesInSlices } from '../subsmanager/bulkload.js';
import { errorCode } from '../subsmanager/errors.js';
import type { HistoryOptions } from '../subsmanager/history.js';
import type { ParsedEdges } from '../subsmanager/sortrows.js';
import { toPairs, type Pair } from '../subsmanager/pairs.js';
import { openStore, StoreUnavailableError, type ReplicatedSubscriptionStore, type SqliteStore, type StoreOptions } from '../subsmanager/store.js';
import type { Subject } from '../subsmanager/subjects.js';
import { BRAIN_SUBJECTS } from './nats-auth.js';
import { CorruptChangeError, decodeChange, encodeEdges, encodePairs, type StoreChange } from './store-changes.js';
import { loadSnapshot, NO_SNAPSHOT, SnapshotError } from './store-snapshot.js';

export const STORE_STREAM = 'C1M_STORE';
/** Under the brain's subjects, which only routers may publish to (cluster/nats-auth.ts). */
export const STORE_SUBJECT = `${BRAIN_SUBJECTS}.store`;

/** How long a write waits for the stream's acknowledgement, then for this router's view to apply it. */
export const PUBLISH_TIMEOUT_MS = 5000;
const APPLY_TIMEOUT_MS = 10_000;
/** Edges of consecutive bulk-load messages applied in one transaction at most, unless told: 16M edges hold 256 MiB of ids. */
const RUN_EDGES = 1 << 24;
/** Room left in a message for its headers (the write's Nats-Msg-Id) below the server's max payload. */
const HEADER_ROOM = 1024;
/** A view's consumer that brought nothing for this long while the stream holds more is made again (see watchdog), checked this often. */
const CONSUMER_QUIET_MS = 2000;
const CONSUMER_CHECK_MS = 500;
/** How long a view waits before trying again to make its consumer. */
const CONSUMER_RETRY_MS = 250;
/** How often a view catching up logs its progress. */
const PROGRESS_MS = 2000;
/** How long the stream's creation or lookup is tried again: a new JetStream cluster elects its meta leader a moment after its servers are ready. */
const STREAM_WAIT_MS = 15_000;

/** The stream as a view knows it: a stream deleted and made again under the same name is another. */
export const streamIdentity = (info: StreamInfo): string => `${STORE_STREAM} created ${info.created}`;

/** The largest change a message may carry on this connection. */
export const maxChangeBytes = (nc: NatsConnection): number => (nc.info?.max_payload ?? 1 << 20) - HEADER_ROOM;

/**
 * The store's stream: created with `replicas` if it does not exist, checked if it does (its subject, its replicas
 * when given, and no limit that would drop a change: a view could not be rebuilt from what is left).
 */
export async function storeStream(jsm: JetStreamManager, replicas?: number): Promise<StreamInfo> {
  const deadline = performance.now() + STREAM_WAIT_MS;
  for (;;) {
    try {
      return checkStream(await findOrCreateStream(jsm, replicas), replicas);
    } catch (err) {
      if (err instanceof StreamConfigError || performance.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

class StreamConfigError extends Error {}

async function findOrCreateStream(jsm: JetStreamManager, replicas?: number): Promise<StreamInfo> {
  let info = await streamInfo(jsm);
  if (!info) {
    if (replicas === undefined) throw new StreamConfigError(`there is no stream ${STORE_STREAM} yet: give its replicas (--replicas R), or start the cluster's routers first`);
    try {
      info = await jsm.streams.add({ name: STORE_STREAM, subjects: [STORE_SUBJECT], num_replicas: replicas, storage: StorageType.File, discard: DiscardPolicy.New });
    } catch (err) {
      // Another router created it meanwhile: checked below like any existing one.
      info = await streamInfo(jsm);
      if (!info) throw err;
    }
  }
  return info;
}

function checkStream(info: StreamInfo, replicas?: number): StreamInfo {
  const { config } = info;
  const wrong = [
    config.subjects?.length !== 1 || config.subjects[0] !== STORE_SUBJECT ? `subjects ${JSON.stringify(config.subjects)}, not ["${STORE_SUBJECT}"]` : '',
    replicas !== undefined && config.num_replicas !== replicas ? `${config.num_replicas} replicas, not ${replicas}` : '',
    config.max_age > 0 || config.max_msgs > 0 || config.max_bytes > 0 || config.max_msgs_per_subject > 0 ? 'a limit that drops changes (max_age, max_msgs, max_bytes)' : '',
  ].filter(Boolean);
  if (wrong.length) throw new StreamConfigError(`stream ${STORE_STREAM} has ${wrong.join(', ')}: c1m's store needs every change kept; fix the stream or delete it (the views are rebuilt from a new one only if their files go too)`);
  return info;
}

async function streamInfo(jsm: JetStreamManager): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(STORE_STREAM);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw err;
  }
}

/** Publishes unacknowledged at most: enough to keep a clustered stream's replication busy, few enough to bound the memory held. */
export const PUBLISH_WINDOW = 8;

/**
 * A bulk load into the replicated store (`c1m friends load --nats`): the edges, checked already, in messages as
 * large as the server takes, in order. Returns once the stream acknowledged all; every view applies them. Not
 * all or nothing, unlike a load into a file: stopped halfway, the messages acknowledged stay, and the same
 * load run again adds the rest (adding a pair twice changes nothing).
 */
export async function publishEdges(
  nc: NatsConnection,
  edges: ParsedEdges,
  mutual: boolean,
  onProgress?: (edges: number) => void,
): Promise<{ messages: number; lastSeq: number }> {
  const js = jetstream(nc);
  const inFlight: Promise<unknown>[] = [];
  let failure: Error | undefined;
  let messages = 0;
  let lastSeq = 0;
  let published = 0;
  for (const message of encodeEdges(edges, mutual, maxChangeBytes(nc))) {
    if (inFlight.length >= PUBLISH_WINDOW) await inFlight.shift();
    if (failure) break;
    const index = ++messages;
    inFlight.push(
      js.publish(STORE_SUBJECT, message.data, { timeout: PUBLISH_TIMEOUT_MS }).then(
        (ack) => {
          lastSeq = Math.max(lastSeq, ack.seq);
          onProgress?.((published += message.edges));
        },
        (err: Error) => {
          failure ??= new Error(`the stream ${STORE_STREAM} did not acknowledge message ${index} of the load (${err.message}): ${published} edges are in; the same load run again adds the rest`);
        },
      ),
    );
  }
  await Promise.all(inFlight);
  if (failure) throw failure;
  return { messages, lastSeq };
}

/**
 * The view's bookkeeping, one row: which stream it is a view of, the last sequence it applied, and the process
 * applying it (host:pid), so that a second router given the same file is refused rather than applying every
 * change twice.
 */
const APPLIED_TABLE = 'CREATE TABLE IF NOT EXISTS store_log_applied (stream TEXT NOT NULL, seq INTEGER NOT NULL, holder TEXT)';

const me = `${hostname()}:${process.pid}`;

/** The last sequence the view at `path` applied, read from its file (0: not a view yet, or no file): for tools outside the router. */
export function appliedBy(path: string): number {
  if (!existsSync(path)) return 0;
  const store = openStore(path, { readonly: true });
  try {
    const table = store.db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'store_log_applied'").get();
    return table ? ((store.db.prepare('SELECT seq FROM store_log_applied').get() as { seq: number } | undefined)?.seq ?? 0) : 0;
  } finally {
    store.close();
  }
}

/** Whether `holder` (host:pid) is another live process of this host. */
function heldByAnother(holder: string | null): boolean {
  const [host, pid] = (holder ?? '').split(':');
  if (!holder || holder === me || host !== hostname()) return false;
  try {
    process.kill(Number(pid), 0);
    return true;
  } catch (err) {
    return errorCode(err) === 'EPERM';
  }
}

/** A router's SQLite store as a view of the stream: each change applied once, with the sequence it came at. */
class StoreView {
  applied: number;
  private readonly record: Database.Statement;

  constructor(
    readonly store: SqliteStore,
    stream: string,
    path: string,
  ) {
    const { db } = store;
    const row = db.transaction(() => {
      db.exec(APPLIED_TABLE);
      const found = db.prepare('SELECT stream, seq, holder FROM store_log_applied').get() as { stream: string; seq: number; holder: string | null } | undefined;
      if (found) {
        if (heldByAnother(found.holder)) throw new Error(`${path} is the store view of another router (process ${found.holder}): give each router a --db of its own`);
        db.prepare('UPDATE store_log_applied SET holder = ?').run(me);
        return found;
      }
      const pairs = store.count();
      if (pairs > 0)
        throw new Error(
          `${path} holds ${pairs} subscriptions but is no view of the stream ${STORE_STREAM}: a replicated router's store is built from the stream alone. ` +
            'Give the router a file of its own (a new path), and load the pairs through the stream (c1m friends load FILE --nats URL)',
        );
      db.prepare('INSERT INTO store_log_applied (stream, seq, holder) VALUES (?, 0, ?)').run(stream, me);
      return { stream, seq: 0 };
    }).immediate();
    if (row.stream !== stream)
      throw new Error(`${path} is a view of ${row.stream}, and the stream now is ${stream}: move ${path} (and its -wal, -shm files) away, and the router rebuilds it from the stream`);
    this.applied = row.seq;
    this.record = db.prepare('UPDATE store_log_applied SET seq = ?');
  }

  /** Lets another process open the view (a router restarted in place after a clean stop). */
  release(): void {
    if (this.store.db.open) this.store.db.prepare('UPDATE store_log_applied SET holder = NULL WHERE holder = ?').run(me);
  }

  /** A change of pairs at `seq`, in one transaction with its sequence; returns the count of pairs added or removed. */
  applyPairs(seq: number, kind: 'add' | 'remove', pairs: readonly Pair[]): number {
    const count = this.store.db.transaction(() => {
      const changed = kind === 'add' ? this.store.addSubscriptions(pairs) : this.store.removeSubscriptions(pairs);
      this.record.run(seq);
      return changed;
    })();
    this.applied = seq;
    return count;
  }

  /**
   * Bulk-load edges of the messages up to `seq`, with it. Catching up (nothing served yet): in one transaction, the
   * bulk loader's fastest way. Serving: in slices that yield to the event loop, `seq` with the last one; a crash
   * halfway leaves edges applied without their sequence, and the view applies those messages again from their
   * first: adding a pair twice changes nothing.
   */
  async applyEdges(seq: number, edges: EdgeBuffer, mutual: boolean, serving: boolean): Promise<number> {
    const options = { direction: mutual ? 'mutual' : 'one-way', inTransaction: () => this.record.run(seq) } as const;
    const added = serving ? await loadEdgesInSlices(this.store, edges.finish(), options) : (await loadEdges(this.store, edges.finish(), options)).rowsAdded;
    this.applied = seq;
    return added;
  }

  /** Moves past a message that is not a change (every view does the same). */
  skip(seq: number): void {
    this.store.db.transaction(() => this.record.run(seq))();
    this.applied = seq;
  }
}

export interface ReplicatedStoreOptions {
  /** This router's view: a SQLite file of its own, never shared with another router. */
  db: string;
  storeOptions?: StoreOptions;
  /** Replicas of the stream when this router creates it; when given, an existing stream must have as many. */
  replicas?: number;
  logger: Logger;
  /**
   * Edges of consecutive bulk-load messages waiting that are applied together, at most (default 16M: 256 MiB of
   * ids); 1 applies each message alone.
   */
  runEdges?: number;
  /** The view cannot apply what the stream holds (its disk failed): by default the process exits, to be restarted. */
  failed?: (err: Error) => void;
}

export interface StoreLogStats {
  stream: string;
  replicas: number;
  /** The last sequence this view applied. */
  applied: number;
  /** Messages this process applied (or skipped) since it opened the view: a restarted view applies only what it missed. */
  appliedSinceOpen: number;
  /** Messages that were not changes, skipped. */
  skipped: number;
}

/**
 * Opens this router's view, the stream (creating it if needed), and applies what the view has not: returns once
 * the view holds every change the stream held at the start, logging the progress meanwhile.
 */
export async function openReplicatedStore(nc: NatsConnection, options: ReplicatedStoreOptions): Promise<ReplicatedStore> {
  // No account check at once: a new cluster answers JetStream's API only once it has elected its meta leader (storeStream waits).
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const info = await storeStream(jsm, options.replicas);
  if (!existsSync(options.db)) await fromSnapshot(nc, info, options);
  let view: StoreView;
  try {
    view = await openViewFile(jsm, info, options);
  } catch (err) {
    if (!(err instanceof ViewBehindError)) throw err;
    // Everything it held is in the snapshot, and every change after in the stream.
    options.logger.warn({ db: options.db, error: err.message }, 'store view behind the purged stream: removed, to be loaded from the snapshot');
    for (const file of [options.db, `${options.db}-wal`, `${options.db}-shm`]) rmSync(file, { force: true });
    await fromSnapshot(nc, info, options);
    view = await openViewFile(jsm, info, options);
  }
  let store: ReplicatedStore | undefined;
  try {
    store = new ReplicatedStore(nc, view, info.config.num_replicas, options);
    await store.catchUp(info.state.last_seq);
    return store;
  } catch (err) {
    if (store) await store.close();
    else view.store.close();
    throw err;
  }
}

/** A view that had not applied the changes the stream purged since (kept in a snapshot). */
class ViewBehindError extends Error {}

/** The view at options.db, checked against the stream: throws ViewBehindError (the file closed) if the stream no longer holds what it lacks. */
async function openViewFile(jsm: JetStreamManager, info: StreamInfo, options: ReplicatedStoreOptions): Promise<StoreView> {
  const sqlite = openStore(options.db, options.storeOptions);
  let view: StoreView | undefined;
  try {
    view = new StoreView(sqlite, streamIdentity(info), options.db);
    // The stream's first sequence, read again: a snapshot's purge may have come since.
    const first = (await jsm.streams.info(STORE_STREAM)).state.first_seq;
    if (view.applied + 1 < first) throw new ViewBehindError(`${options.db} applied the stream ${STORE_STREAM} through sequence ${view.applied}, and its changes before ${first} are purged (kept in a snapshot)`);
    return view;
  } catch (err) {
    view?.release();
    sqlite.close();
    throw err;
  }
}

/**
 * A view on an empty data dir starts from the newest snapshot, if there is one: then it applies only the stream
 * after it. A snapshot that cannot be read is logged; the view is rebuilt from the whole stream if the stream
 * still holds it all, and refused otherwise (nothing is written either way).
 */
async function fromSnapshot(nc: NatsConnection, info: StreamInfo, options: ReplicatedStoreOptions): Promise<void> {
  const started = performance.now();
  try {
    const manifest = await loadSnapshot(nc, options.db, streamIdentity(info));
    options.logger.info({ seq: manifest.seq, bytes: manifest.bytes, seconds: Math.round(performance.now() - started) / 1000 }, 'store view loaded from a snapshot');
  } catch (err) {
    if (!(err instanceof SnapshotError)) throw err;
    if (info.state.first_seq > 1)
      throw new Error(`${options.db} is new, and the stream ${STORE_STREAM} starts at sequence ${info.state.first_seq} (purged up to a snapshot), whose snapshot cannot be loaded: ${err.message}`);
    if (err.message !== NO_SNAPSHOT) options.logger.warn({ error: err.message }, 'the store snapshot cannot be loaded: the view is rebuilt from the whole stream');
  }
}

interface Waiter {
  resolve: (count: number) => void;
  reject: (err: Error) => void;
}

export class ReplicatedStore implements ReplicatedSubscriptionStore {
  private readonly js: JetStreamClient;
  private readonly log: Logger;
  private messages?: ConsumerMessages;
  private following?: Promise<void>;
  /** Writes of this router waiting for their message to be applied, by the message's id. */
  private readonly waiters = new Map<string, Waiter>();
  /** Consecutive bulk-load edges read but not yet applied, up to sequence runEnd. */
  private run?: { edges: EdgeBuffer; mutual: boolean; end: number };
  private skipped = 0;
  private readonly openedAt: number;
  private failure?: Error;
  private closing = false;
  /** When the consumer last brought a message (or was made), whether one is being applied, and whether the watchdog is asking the stream. */
  private lastHeard = performance.now();
  private applying = false;
  private checking = false;
  private watching?: NodeJS.Timeout;
  private caughtUp?: { target: number; resolve: () => void };
  /** Set once the view has caught up: from then on lookups and sends share the event loop with its applies. */
  private serving = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly view: StoreView,
    readonly replicas: number,
    private readonly options: ReplicatedStoreOptions,
  ) {
    this.js = jetstream(nc);
    this.log = options.logger;
    this.openedAt = view.applied;
  }

  /** Follows the stream from the view's last sequence; resolves once the view has applied `target`. */
  async catchUp(target: number): Promise<void> {
    const started = performance.now();
    const from = this.view.applied;
    this.following = this.follow();
    const jsm = await jetstreamManager(this.nc, { checkAPI: false });
    this.watching = setInterval(() => void this.watchdog(jsm), CONSUMER_CHECK_MS);
    if (this.view.applied >= target) {
      this.serving = true;
      return;
    }
    this.log.info({ stream: STORE_STREAM, applied: from, last: target }, 'store view catching up with the stream: no sends or lookups until it has');
    const progress = setInterval(() => this.log.info({ applied: this.view.applied, last: target }, 'store view catching up'), PROGRESS_MS);
    try {
      await new Promise<void>((resolve, reject) => {
        this.caughtUp = { target, resolve };
        this.settled();
        this.following!.then(() => reject(this.failure ?? new Error('store view stopped before catching up')), reject);
      });
    } finally {
      clearInterval(progress);
      this.caughtUp = undefined;
    }
    this.log.info({ applied: this.view.applied, messages: this.view.applied - from, seconds: Math.round(performance.now() - started) / 1000 }, 'store view caught up');
  }

  /** Applies what the stream delivers, on a consumer made again whenever its server is lost, until closed or failed. */
  private async follow(): Promise<void> {
    try {
      for (;;) {
        const messages = await this.subscribe();
        if (!messages) return;
        this.lastHeard = performance.now();
        for await (const msg of messages) {
          this.applying = true;
          try {
            await this.take(msg);
          } finally {
            this.applying = false;
            this.lastHeard = performance.now();
          }
        }
      }
    } catch (err) {
      this.failure = new Error(`store view of ${STORE_STREAM} cannot apply the stream (at sequence ${this.view.applied + 1}): ${(err as Error).message}`);
      this.messages?.stop();
      for (const waiter of this.waiters.values()) waiter.reject(new StoreUnavailableError(this.failure.message));
      this.waiters.clear();
      if (!this.caughtUp) (this.options.failed ?? exitOnFailure(this.log))(this.failure);
    }
  }

  /**
   * An ordered consumer from the sequence after the last read, tried again while JetStream cannot make one (a
   * server lost, a leader being elected); undefined once closing. Room for several of the largest messages, so
   * that a rebuild reads ahead of its applies.
   */
  private async subscribe(): Promise<ConsumerMessages | undefined> {
    for (let tries = 1; !this.closing; tries++) {
      try {
        const next = (this.run?.end ?? this.view.applied) + 1;
        const consumer = await this.js.consumers.get(STORE_STREAM, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: next });
        this.messages = await consumer.consume({ max_bytes: 8 * (maxChangeBytes(this.nc) + HEADER_ROOM) });
        // Closed while it was being made: close() found no consumer to stop.
        if (this.closing) this.messages.stop();
        if (tries > 1) this.log.info({ stream: STORE_STREAM, from: next, tries }, "the store view's consumer is made again");
        return this.messages;
      } catch (err) {
        this.log.warn({ stream: STORE_STREAM, error: (err as Error).message, tries }, "cannot make the store view's consumer yet: trying again");
        await new Promise((resolve) => setTimeout(resolve, CONSUMER_RETRY_MS));
      }
    }
    return undefined;
  }

  /**
   * The consumer, an R1 one, lives on one server: when that server is lost, the client does not always make it
   * again by itself (it may find it still assigned, or miss no heartbeat while reconnecting). So once nothing has
   * come for a while, the stream is asked whether it holds more than this view has read; if it does, the
   * consumer is stopped and follow() makes a new one at the next sequence.
   */
  private async watchdog(jsm: JetStreamManager): Promise<void> {
    // A long apply (a rebuild's bulk load) is not a consumer that brings nothing.
    if (this.checking || this.applying || performance.now() - this.lastHeard < CONSUMER_QUIET_MS) return;
    this.checking = true;
    try {
      const last = (await jsm.streams.info(STORE_STREAM)).state.last_seq;
      const read = this.run?.end ?? this.view.applied;
      if (last > read && !this.applying && performance.now() - this.lastHeard >= CONSUMER_QUIET_MS && this.messages) {
        this.log.warn({ stream: STORE_STREAM, last, read }, "the store view's consumer has brought nothing while the stream holds more: making it again");
        this.messages.stop();
      }
    } catch {
      // The stream cannot answer now (a leader being elected): asked again at the next check.
    } finally {
      this.lastHeard = Math.max(this.lastHeard, performance.now() - CONSUMER_QUIET_MS / 2);
      this.checking = false;
    }
  }

  private async take(msg: JsMsg): Promise<void> {
    const seq = msg.seq;
    const read = this.run?.end ?? this.view.applied;
    if (seq <= read) return; // applied already: a consumer recreated after a reconnect
    if (seq > read + 1)
      throw new Error(`the stream's changes ${read + 1}-${seq - 1} were purged (up to a snapshot) before this view applied them: restarted, the router loads the snapshot in its place`);
    let change: StoreChange;
    try {
      change = decodeChange(msg.data);
    } catch (err) {
      if (!(err instanceof CorruptChangeError)) throw err;
      await this.flushRun();
      this.view.skip(seq);
      this.skipped++;
      this.log.error({ stream: STORE_STREAM, seq, error: err.message }, 'skipped a message of the store stream that is not a change');
      this.settled();
      return;
    }
    if (change.kind === 'edges') {
      if (this.run && this.run.mutual !== change.mutual) await this.flushRun();
      this.run ??= { edges: new EdgeBuffer(), mutual: change.mutual, end: seq };
      const { ids } = change;
      for (let i = 0; i < ids.length; i += 2) this.run.edges.append(ids[i], ids[i + 1]);
      this.run.end = seq;
      // More waiting: applied together, in one transaction (the fast path into an empty view).
      if (msg.info.pending === 0 || this.run.edges.count >= (this.options.runEdges ?? RUN_EDGES)) await this.flushRun();
      return;
    }
    await this.flushRun();
    const count = this.view.applyPairs(seq, change.kind, change.pairs);
    const id = msg.headers?.get('Nats-Msg-Id');
    const waiter = id ? this.waiters.get(id) : undefined;
    if (waiter) {
      this.waiters.delete(id!);
      waiter.resolve(count);
    }
    this.settled();
  }

  private async flushRun(): Promise<void> {
    const run = this.run;
    if (!run) return;
    this.run = undefined;
    await this.view.applyEdges(run.end, run.edges, run.mutual, this.serving);
    this.settled();
  }

  private settled(): void {
    if (this.caughtUp && this.view.applied >= this.caughtUp.target) {
      this.serving = true;
      this.caughtUp.resolve();
    }
  }

  addSubscriptions(pairs: readonly Pair[]): Promise<number> {
    return this.write('add', pairs);
  }

  removeSubscriptions(pairs: readonly Pair[]): Promise<number> {
    return this.write('remove', pairs);
  }

  /** Bad pairs are refused before anything is published; a change larger than a message goes as several, in order. */
  private async write(kind: 'add' | 'remove', input: readonly Pair[]): Promise<number> {
    const pairs = toPairs(input);
    if (this.failure) throw new StoreUnavailableError(this.failure.message);
    if (pairs.length === 0) return 0;
    let count = 0;
    for (const message of encodePairs(kind, pairs, maxChangeBytes(this.nc))) count += await this.publishAndApply(message);
    return count;
  }

  private async publishAndApply(message: Uint8Array): Promise<number> {
    const id = nuid.next();
    let timer: NodeJS.Timeout | undefined;
    const applied = new Promise<number>((resolve, reject) => this.waiters.set(id, { resolve, reject }));
    try {
      await this.js.publish(STORE_SUBJECT, message, { msgID: id, timeout: PUBLISH_TIMEOUT_MS });
    } catch (err) {
      this.waiters.delete(id);
      throw new StoreUnavailableError(
        `the stream ${STORE_STREAM} did not acknowledge the change (${(err as Error).message}): it may or may not be applied; retry (a change applied twice changes nothing)`,
      );
    }
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new StoreUnavailableError(`the stream ${STORE_STREAM} holds the change, but this router has not applied it within ${APPLY_TIMEOUT_MS} ms; the others may have`));
      }, APPLY_TIMEOUT_MS);
    });
    try {
      return await Promise.race([applied, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  getSubscribers(subject: Subject): number[] {
    return this.view.store.getSubscribers(subject);
  }

  getSubscriptions(user: number): Subject[] {
    return this.view.store.getSubscriptions(user);
  }

  count(): number {
    return this.view.store.count();
  }

  history(options: HistoryOptions) {
    return this.view.store.history(options);
  }

  stats(): StoreLogStats {
    return { stream: STORE_STREAM, replicas: this.replicas, applied: this.view.applied, appliedSinceOpen: this.view.applied - this.openedAt, skipped: this.skipped };
  }

  /** Stops following the stream (after the change being applied), refuses the writes waiting, closes the view. */
  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.watching);
    this.messages?.stop();
    await this.following;
    for (const waiter of this.waiters.values()) waiter.reject(new StoreUnavailableError('the store is closing'));
    this.waiters.clear();
    this.view.release();
    this.view.store.close();
  }
}

const exitOnFailure =
  (log: Logger) =>
  (err: Error): void => {
    // Crash-only: restarted, the router applies from the last sequence its view recorded.
    log.fatal({ error: err.message }, 'the store view stopped: exiting');
    process.exit(1);
  };
