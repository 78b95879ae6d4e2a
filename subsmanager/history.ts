/**
 * The message history: every send, kept for a while so that a stream that
 * comes back can be given what it missed. A message's id is its row id:
 * allocated here when the router accepts the send, in order, and written with
 * the others of the same event-loop turn in one transaction, before the turn's
 * stream writes, so the send path does not pay a transaction per message.
 * Rows are pruned by age and by a count per subject; what pruning took is
 * remembered (`history_floor`), so a stream resuming from before it is told
 * its history is lost rather than handed a silent gap. One process numbers a
 * store's messages at a time (the sequencer lease, ./sequencer.ts); a
 * replicated history's file is a router's view of a stream, whose ids are the
 * stream's (cluster/replicated-history.ts). The file itself, where it lives,
 * its layout and its attachment to the store's connection: ./history-file.ts.
 */
import type Database from 'better-sqlite3';
import type { Worker } from 'node:worker_threads';
import { attachHistoryFile, EVERY_SUBJECT, type HistoryFileOptions } from './history-file.js';
import { LEASE, SequencerLease, type Holder, type Term } from './sequencer.js';
import { errorCode } from './errors.js';
import type { Subject } from './subjects.js';
import { retryBusy } from './wal.js';

/** A key's form: 1 to 64 of the characters that need no quoting in a header, a URL or a NATS header value. */
const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,64}$/;
export const IDEMPOTENCY_KEY_RULES = '1 to 64 of A-Z a-z 0-9 . _ : -';
export const isIdempotencyKey = (key: unknown): key is string => typeof key === 'string' && IDEMPOTENCY_KEY.test(key);

/** A key as one string with its subject (keys are per subject): `5 order-17`, `photo:789 c-1`; neither holds a space. */
export const subjectKey = (subject: Subject, key: string): string => `${subject} ${key}`;

/** A history's window, and which file it keeps (see HistoryFileOptions). */
export interface HistoryOptions extends HistoryFileOptions {
  /** Messages are kept this long (seconds). */
  seconds: number;
  /** And at most this many per subject (the newest). */
  perSubject: number;
}

export interface Missed {
  id: number;
  subject: Subject;
  body: Buffer;
}

/** What a resuming stream gets: what it missed, in id order (`more`: the budget cut it short), or why that cannot be known. */
export type Replay = { lost: false; messages: Missed[]; more: boolean } | { lost: true; why: 'expired' | 'unknown' };

/**
 * The replay budget's one rule, for the history's read, the router's answer
 * and a stream's replay: a message is taken while the bytes so far and its
 * own stay within the budget, and the first always, whatever its size, so
 * that every resume makes progress (a budget that refused it would end each
 * resume with nothing, and its client would come back for the same again).
 */
export const replayTakes = (before: number, size: number, budget: number): boolean => before === 0 || before + size <= budget;

/** What a replayed message weighs in the history's budget: its body, and about what its id and framing add. */
const REPLAY_MESSAGE_OVERHEAD = 32;

export interface HistoryStats {
  term: number | null;
  lastId: number;
  resumes: number;
  replayed: number;
  lost: number;
}

/** Rows waiting for their turn's transaction: id, subject, at, body, and the send's idempotency key if it had one. */
export type Row = [number, Subject, number, Uint8Array, string?];

/**
 * What a router's directory needs of a partition's history: it numbers sends (append), replays and redelivers, and
 * runs `done` once every message numbered so far is committed (a local file's commit, or a replicated stream's
 * acknowledgement), `failed` where it never will be: deliveries and answers wait for it.
 */
export interface MessageHistory {
  append(subject: Subject, body: Uint8Array, key?: string): number;
  /** The id of the message sent to `subject` with idempotency key `key` within the window, if any (numbered, maybe not yet committed). */
  keyed(subject: Subject, key: string): number | undefined;
  readonly lastId: number;
  replay(user: number, after: number, budget?: number, topics?: readonly string[]): Replay;
  newerThan(id: number): Missed[];
  afterCommit(done: () => void, failed?: () => void): void;
  stats(): HistoryStats;
}

/** Thrown where this process would number a message without holding the sequencer lease (see sequencer.ts). */
export class NotSequencerError extends Error {
  constructor(readonly holder?: Holder) {
    super(holder ? `another process (${holder.holder}, term ${holder.term}) numbers this store's messages` : "this process does not hold the lease on this store's history");
  }
}

export class History implements MessageHistory {
  /** Messages appended so far (this process). */
  appended = 0;
  /** Resumes answered, messages replayed, and resumes told their history is lost. */
  resumes = 0;
  replayed = 0;
  lost = 0;
  private nextId: number;
  private pending: Row[] = [];
  /** Callers of afterCommit, in order, waiting for rows that a busy file held back. */
  private waiting: Array<[done: () => void, failed: (() => void) | undefined]> = [];
  private flushScheduled = false;
  private readonly insert;
  private readonly since;
  private readonly sinceWithTopics;
  private readonly size;
  private readonly body;
  private readonly floor;
  private readonly floorWithTopics;
  private readonly raiseFloor;
  private readonly pruneOld;
  private readonly pruneSubject;
  private readonly nthNewest;
  private readonly firstFresh;
  private readonly newest;
  private readonly hears;
  private readonly write;
  private readonly newer;
  private readonly insertKey;
  private readonly keyedId;
  private readonly oldestKeyAt;
  private readonly firstFreshKey;
  private readonly pruneKeys;
  private readonly lastFloor;
  private readonly readPlace;
  private readonly writePlace;
  /** Replicated: the last id the stream acknowledged; rows above it wait (see flush). */
  private committedThrough = 0;
  /** Replicated: this process numbers the partition's messages (the stream's leader). */
  private numbering = false;
  private closed = false;
  private pruneTimer?: NodeJS.Timeout;
  private renewTimer?: NodeJS.Timeout;
  private readonly checkpointer?: Worker;
  /** Who may number messages (see sequencer.ts): appends need it held, commits confirm it. */
  readonly lease: SequencerLease;
  /**
   * Called when this process finds the lease taken by another: whatever it
   * holds in memory may now be delivered out of order, so the processes that
   * run a history exit here. The default throws.
   */
  onLeaseLost: () => void = () => {
    throw new NotSequencerError(this.lease.current());
  };

  /** Opens the history beside the store whose connection this is, creating it if needed (see attachHistoryFile). */
  static attach(db: Database.Database, options: HistoryOptions): History {
    return attachHistoryFile(db, options, (h, checkpointer) => new History(db, options, h, checkpointer));
  }

  private constructor(
    private readonly db: Database.Database,
    private readonly options: HistoryOptions,
    /** Its schema in the store's connection (see attachHistoryFile): every statement names it, as several partitions' tables share names. */
    private readonly h: string,
    checkpointer?: Worker,
  ) {
    this.checkpointer = checkpointer;
    checkpointer?.unref();
    this.lease = new SequencerLease(db, h);
    this.readPlace = options.replicated ? db.prepare(`SELECT epoch, through FROM ${h}.stream WHERE one = 1`) : undefined;
    this.writePlace = options.replicated
      ? db.prepare(`INSERT INTO ${h}.stream (one, epoch, through) VALUES (1, @epoch, @through) ON CONFLICT (one) DO UPDATE SET through = max(through, excluded.through)`)
      : undefined;
    this.newest = db.prepare(`SELECT max(id) FROM ${h}.history`).pluck();
    this.lastFloor = db.prepare(`SELECT max(through) FROM ${h}.history_floor`).pluck();
    this.nextId = this.firstFreeId();
    this.hears = db.prepare('SELECT subscribee FROM subscriptions_by_subscriber WHERE subscriber = ?').pluck();
    // A view may get one of the stream's rows twice (a leader's acknowledged row, read again by the follower it became): the same row.
    this.insert = db.prepare(`INSERT ${options.replicated ? 'OR IGNORE ' : ''}INTO ${h}.history (id, subject, at, body) VALUES (?, ?, ?, ?)`);
    // Every message `user` would have received, by the subscriptions it holds now: its own and those of whom it hears,
    // and (sinceWithTopics) those of the topics its stream listens to (@topics, a JSON list) that it does not also
    // subscribe to: a statement apart, as most streams listen to none, and the third part costs every resume even empty.
    // Ids only, from the (subject, id) index alone, at most @limit: each row's size and body are read as a replay's
    // budget takes them, so a resume from an old id costs about what it sends, not every message kept since.
    const bySubscriptions = `SELECT id, subject FROM ${h}.history WHERE id > @after AND subject = @user
       UNION ALL
       SELECT m.id, m.subject FROM subscriptions_by_subscriber s JOIN ${h}.history m ON m.subject = s.subscribee AND m.id > @after
       WHERE s.subscriber = @user AND s.subscribee != @user`;
    this.since = db.prepare(`${bySubscriptions} ORDER BY id LIMIT @limit`);
    this.sinceWithTopics = db.prepare(
      `${bySubscriptions}
       UNION ALL
       SELECT m.id, m.subject FROM json_each(@topics) t JOIN ${h}.history m ON m.subject = t.value AND m.id > @after
       WHERE t.value NOT IN (SELECT subscribee FROM subscriptions_by_subscriber WHERE subscriber = @user)
       ORDER BY id LIMIT @limit`,
    );
    this.size = db.prepare(`SELECT length(body) FROM ${h}.history WHERE id = ?`).pluck(); // the row's header, not the blob's pages
    this.body = db.prepare(`SELECT body FROM ${h}.history WHERE id = ?`).pluck();
    const floorOfSubscriptions = `SELECT max(through) FROM ${h}.history_floor WHERE subject = ${EVERY_SUBJECT} OR subject = @user
         OR subject IN (SELECT subscribee FROM subscriptions_by_subscriber WHERE subscriber = @user)`;
    this.floor = db.prepare(floorOfSubscriptions).pluck();
    this.floorWithTopics = db.prepare(`${floorOfSubscriptions} OR subject IN (SELECT value FROM json_each(@topics))`).pluck();
    this.raiseFloor = db.prepare(
      `INSERT INTO ${h}.history_floor (subject, through) VALUES (?, ?) ON CONFLICT (subject) DO UPDATE SET through = max(through, excluded.through)`,
    );
    // Ids grow with time: the scan from the oldest row stops at the first one to keep.
    this.firstFresh = db.prepare(`SELECT id FROM ${h}.history WHERE at >= ? ORDER BY id LIMIT 1`).pluck();
    this.pruneOld = db.prepare(`DELETE FROM ${h}.history WHERE id <= ?`);
    this.nthNewest = db.prepare(`SELECT id FROM ${h}.history WHERE subject = ? ORDER BY id DESC LIMIT 1 OFFSET ?`).pluck();
    this.pruneSubject = db.prepare(`DELETE FROM ${h}.history WHERE subject = ? AND id <= ?`);
    this.newer = db.prepare(`SELECT id, subject, body FROM ${h}.history WHERE id > ? ORDER BY id`);
    // A key already kept keeps its first message: a view may read a row twice, as above.
    this.insertKey = db.prepare(`INSERT OR IGNORE INTO ${h}.history_keys (id, subject, key, at) VALUES (?, ?, ?, ?)`);
    this.keyedId = db.prepare(`SELECT id FROM ${h}.history_keys WHERE subject = ? AND key = ?`).pluck();
    this.oldestKeyAt = db.prepare(`SELECT at FROM ${h}.history_keys ORDER BY id LIMIT 1`).pluck();
    this.firstFreshKey = db.prepare(`SELECT id FROM ${h}.history_keys WHERE at >= ? ORDER BY id LIMIT 1`).pluck();
    this.pruneKeys = db.prepare(`DELETE FROM ${h}.history_keys WHERE id < ?`);
    this.write = db.transaction((rows: Row[], through?: number) => {
      if (through !== undefined) this.writePlace!.run({ epoch: this.place()!.epoch, through });
      else if (!this.lease.confirmed()) throw new NotSequencerError(this.lease.current());
      const subjects = new Set<Subject>();
      for (const [id, subject, at, body, key] of rows) {
        this.insert.run(id, subject, at, body);
        if (key !== undefined) this.insertKey.run(id, subject, key, at);
        subjects.add(subject);
      }
      for (const subject of subjects) {
        const through = this.nthNewest.get(subject, this.options.perSubject) as number | undefined;
        if (through === undefined) continue;
        this.pruneSubject.run(subject, through);
        this.raiseFloor.run(subject, through);
      }
    });
  }

  private firstFreeId(): number {
    return Math.max((this.newest.get() as number | null) ?? 0, (this.lastFloor.get() as number | null) ?? 0, this.place()?.through ?? 0) + 1;
  }

  /** Replicated: the stream this view follows (its epoch) and the last id it holds; undefined before its first. */
  place(): { epoch: number; through: number } | undefined {
    return this.readPlace?.get() as { epoch: number; through: number } | undefined;
  }

  /**
   * Replicated: makes this file the view of a stream of epoch `epoch` whose messages before `through + 1` are gone
   * (the stream's first sequence): a file that followed another stream (deleted and made again) is emptied, as a
   * token of the old one must read as unknown; one of this stream that fell behind its first message forgets the gap
   * (a resume from within it is told expired).
   */
  follow(epoch: number, through: number): void {
    const move = this.db.transaction(() => {
      const place = this.place();
      if (place?.epoch !== epoch) {
        for (const table of ['history', 'history_floor', 'history_keys', 'stream']) this.db.prepare(`DELETE FROM ${this.h}.${table}`).run();
        this.raiseFloor.run(EVERY_SUBJECT, through);
        this.writePlace!.run({ epoch, through });
      } else if (place.through < through) {
        this.raiseFloor.run(EVERY_SUBJECT, through);
        this.writePlace!.run({ epoch, through });
      }
    });
    // Another connection to the file (an operator's sqlite3, a backup) may hold its write lock a moment: waited for.
    retryBusy(() => move.immediate());
    this.pruneTimer ??= setInterval(() => this.prune(), 1000).unref();
    this.nextId = this.firstFreeId();
  }

  /** Replicated, following: writes rows the stream holds and the last id seen (`through`, a term marker's maybe). */
  applied(rows: Row[], through: number): void {
    this.write.immediate(rows, through);
    this.nextId = through + 1;
  }

  /** Replicated: from now on this process numbers the messages after `through` (its term marker's id), or stops doing so (undefined). */
  numberAfter(through: number | undefined): void {
    this.numbering = through !== undefined;
    if (through === undefined) {
      // Numbered but never acknowledged: the stream does not have them, or followers will read them from it.
      this.pending = this.pending.filter((row) => row[0] <= this.committedThrough);
      this.nextId = Math.max(this.committedThrough, this.place()?.through ?? 0) + 1;
      return;
    }
    this.flush();
    this.write([], through);
    this.committedThrough = through;
    this.nextId = through + 1;
  }

  /** Replicated: the stream acknowledged every message up to `id`: those rows may be written. */
  committed(id: number): void {
    if (id <= this.committedThrough) return;
    this.committedThrough = id;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  /**
   * A local file commits at once: `done` runs once what waits is written. Where another process holds the file's
   * write lock (SQLITE_BUSY), the rows wait for a later flush, and so does `done` (an answer is never given for a
   * message that is not in the file yet); `failed` runs if they are refused for good.
   */
  afterCommit(done: () => void, failed?: () => void): void {
    this.flush();
    if (this.pending.length === 0) return done();
    this.waiting.push([done, failed]);
  }

  /** Runs what waited for rows held back by a busy file: done once they are written, failed where they will not be. */
  private settle(written: boolean): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const [done, failed] of waiting) written ? done() : failed?.();
  }

  /**
   * Takes the lease if nobody holds it, and from then on numbers messages
   * after the newest the file holds, renews the lease and prunes. Returns the
   * term, and where the previous holder's deliveries may have stopped; undefined
   * while another process holds it.
   */
  claimLease(now = Date.now()): Term | undefined {
    let term: Term | undefined;
    try {
      // A look first, without the write lock: a process waiting for the lease looks often.
      if ((this.lease.current(now)?.holder ?? this.lease.holder) !== this.lease.holder) return undefined;
      term = this.lease.claim(now);
    } catch (err) {
      if (errorCode(err) === 'SQLITE_BUSY') return undefined;
      throw err;
    }
    if (!term) return undefined;
    this.nextId = this.firstFreeId();
    this.pruneTimer ??= setInterval(() => this.prune(), 1000).unref();
    this.renewTimer ??= setInterval(() => {
      if (this.lease.renew() === 'lost') this.leaseLost();
    }, LEASE.renewMs).unref();
    return term;
  }

  /**
   * Whether this process may number a message now: it holds the lease with
   * more than the margin left. A holder whose event loop was held up past its
   * renewal renews here, at once.
   */
  holdsLease(): boolean {
    if (this.options.replicated) return this.numbering;
    if (this.lease.holds()) return true;
    return this.lease.term !== undefined && this.lease.renew() === 'held' && this.lease.holds();
  }

  /** Kept messages with ids above `id`, in id order: what a new holder delivers again. */
  newerThan(id: number): Missed[] {
    return this.newer.all(id) as Missed[];
  }

  /**
   * Takes a message and gives it its id; it is written at the end of this event-loop turn, with its idempotency key
   * if it has one (the caller asked keyed() first). Only while the lease is held.
   */
  append(subject: Subject, body: Uint8Array, key?: string): number {
    if (!this.holdsLease()) throw new NotSequencerError(this.lease.current());
    const id = this.nextId++;
    this.pending.push(key === undefined ? [id, subject, Date.now(), body] : [id, subject, Date.now(), body, key]);
    this.appended++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Before the turn's stream writes (scheduled after this by the sends that follow), so a message is in the
      // file before any stream shows its id: a server killed right after still has what it delivered.
      setImmediate(this.flush);
    }
    return id;
  }

  keyed(subject: Subject, key: string): number | undefined {
    // Rows waiting for their transaction (one turn's; a replicated leader's, until the stream acknowledges them) are few.
    for (const row of this.pending) if (row[4] === key && row[1] === subject) return row[0];
    return this.keyedId.get(subject, key) as number | undefined;
  }

  /**
   * Replicated: the stream holds `subject`'s message of `key` as `id`, which this view had forgotten (a duplicate
   * acknowledgement): remembered for a window from now, so that the next retry is answered from here. Its id is
   * older than its neighbours', so pruning the keys (oldest id first) waits for it: keys live up to a window longer.
   */
  rememberKey(subject: Subject, key: string, id: number): void {
    this.insertKey.run(id, subject, key, Date.now());
  }

  /** For /stats: the lease's term held (null: none), the last id, and the resumes, messages replayed and lost histories so far. */
  stats(): HistoryStats {
    return { term: this.lease.term ?? null, lastId: this.lastId, resumes: this.resumes, replayed: this.replayed, lost: this.lost };
  }

  /** The highest id given so far. */
  get lastId(): number {
    return this.nextId - 1;
  }

  /**
   * What `user` missed since message `after`, in id order, including messages
   * of this turn not yet written, and those of the `topics` its stream
   * listens to, as much as `budget` bytes take (see replayTakes; each message
   * weighs its body and REPLAY_MESSAGE_OVERHEAD), with `more` when some were
   * left for the next resume (no budget: all of it). Lost when pruning took
   * some of it, or when `after` is an id this store never gave (another
   * store, a wiped file).
   */
  replay(user: number, after: number, budget = Number.MAX_SAFE_INTEGER, topics: readonly string[] = []): Replay {
    this.resumes++;
    if (!Number.isSafeInteger(after) || after < 0 || after > this.lastId) return this.lostReplay('unknown');
    const [floor, since, params] = topics.length === 0 ? [this.floor, this.since, { user }] : [this.floorWithTopics, this.sinceWithTopics, { user, topics: JSON.stringify(topics) }];
    if (((floor.get(params) as number | null) ?? 0) > after) return this.lostReplay('expired');
    const messages: Missed[] = [];
    let bytes = 0;
    /** Takes a message if the budget does; false once it does not. */
    const take = (id: number, subject: Subject, size: number, body: () => Buffer): boolean => {
      if (!replayTakes(bytes, size + REPLAY_MESSAGE_OVERHEAD, budget)) return false;
      bytes += size + REPLAY_MESSAGE_OVERHEAD;
      messages.push({ id, subject, body: body() });
      return true;
    };
    // As many rows as the budget could take, and one more to know whether there is more.
    const limit = Math.floor(budget / (REPLAY_MESSAGE_OVERHEAD + 1)) + 2;
    let rows = 0;
    let more = false;
    for (const { id, subject } of since.iterate({ ...params, after, limit }) as Iterable<{ id: number; subject: Subject }>) {
      rows++;
      if (!take(id, subject, this.size.get(id) as number, () => this.body.get(id) as Buffer)) {
        more = true;
        break;
      }
    }
    // Pending rows are not in the file yet, and come after every row there; their subjects are checked against the same subscriptions and topics.
    if (!more && rows < limit && this.pending.length > 0) {
      const hears = new Set([...(this.hears.all(user) as Subject[]), ...topics]);
      hears.add(user);
      for (const [id, subject, , body] of this.pending) {
        if (id <= after || !hears.has(subject)) continue;
        if (!take(id, subject, body.length, () => Buffer.from(body))) {
          more = true;
          break;
        }
      }
    }
    this.replayed += messages.length;
    return { lost: false, messages, more: more || rows === limit };
  }

  /** Writes what waits now: before a backend is told its send was taken, at shutdown. */
  readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    let rows = this.pending;
    this.pending = [];
    if (this.options.replicated) {
      // Only what the stream holds: a row it never acknowledged could be numbered again by the next leader.
      const kept = rows.findIndex((row) => row[0] > this.committedThrough);
      if (kept >= 0) {
        this.pending = rows.slice(kept);
        rows = rows.slice(0, kept);
      }
      if (rows.length === 0) return;
    }
    try {
      if (this.options.replicated) this.write.immediate(rows, rows[rows.length - 1][0]);
      else this.write(rows);
    } catch (err) {
      // SQLITE_BUSY (another process holds the write lock, e.g. a bulk load): keep the rows, and what waits for them, for the next turn.
      if (errorCode(err) === 'SQLITE_BUSY') {
        this.pending = rows.concat(this.pending);
        if (!this.flushScheduled) {
          this.flushScheduled = true;
          setTimeout(this.flush, 50);
        }
        return;
      }
      this.settle(false);
      if (err instanceof NotSequencerError) return this.leaseLost();
      throw err;
    }
    if (this.waiting.length > 0 && this.pending.length === 0) this.settle(true);
  };

  /** Drops rows and idempotency keys older than the window, remembering how far it went. */
  prune(now = Date.now()): void {
    try {
      const cutoff = now - this.options.seconds * 1000;
      const fresh = this.firstFresh.get(cutoff) as number | undefined;
      const through = fresh === undefined ? (this.newest.get() as number | null) : fresh - 1;
      const rowsOld = through !== null && through > ((this.floor.get({ user: EVERY_SUBJECT }) as number | null) ?? 0);
      const keysOld = ((this.oldestKeyAt.get() as number | undefined) ?? cutoff) < cutoff;
      if (!rowsOld && !keysOld) return;
      this.db.transaction(() => {
        if (rowsOld) {
          this.pruneOld.run(through);
          this.raiseFloor.run(EVERY_SUBJECT, through);
        }
        // Ids grow with time, as rows' do: every key before the first fresh one is old.
        if (keysOld) this.pruneKeys.run((this.firstFreshKey.get(cutoff) as number | undefined) ?? Number.MAX_SAFE_INTEGER);
      })();
    } catch (err) {
      if (errorCode(err) !== 'SQLITE_BUSY') throw err;
    }
  }

  private leaseLost(): void {
    clearInterval(this.renewTimer);
    this.pending = [];
    this.lease.term = undefined;
    this.onLeaseLost();
  }

  /**
   * Writes what waits and hands the lease over to whichever process takes it next (SequencerLease.handOver); this one
   * stays open, to replay and to claim the lease again. False, and still held, while a row could not be written (busy).
   */
  handOver(): boolean {
    if (this.lease.term === undefined) return false;
    this.flush();
    if (this.pending.length > 0) return false;
    clearInterval(this.pruneTimer);
    clearInterval(this.renewTimer);
    this.pruneTimer = this.renewTimer = undefined;
    this.lease.handOver();
    return true;
  }

  /** Writes what waits and gives the lease back: the caller has delivered everything it appended. Once; again does nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pruneTimer);
    clearInterval(this.renewTimer);
    if (this.options.replicated) this.flush();
    else if (this.lease.term !== undefined) {
      this.flush();
      this.lease.release();
    }
    void this.checkpointer?.terminate();
    if (this.db.open) {
      this.db.pragma('wal_autocheckpoint = 1000');
      this.db.prepare(`DETACH DATABASE ${this.h}`).run();
    }
  }

  /** Counts a resume told its history is lost, and is its answer. */
  private lostReplay(why: 'expired' | 'unknown'): Replay {
    this.lost++;
    return { lost: true, why };
  }
}
