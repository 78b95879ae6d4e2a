/**
 * Who numbers and delivers a history's messages: one process at a time.
 * Two routers numbering sends on one store could deliver 11 before 10, and a
 * client that saw 11 would resume past 10 for ever. So the process that
 * appends holds a lease, a row in the history file: taken when free or
 * lapsed, renewed every `renewMs`, and confirmed inside every commit, so a
 * holder that lost it commits nothing more. Each holder has a new term (the
 * time it took the lease, or one more than the last), which its deliveries
 * carry: an edge drops a late batch of an older term. Each
 * renewal also notes the newest id then (`through`) and the one the renewal
 * before noted (`settled`): a holder that stops delivering without releasing
 * (kill -9, a frozen process) may have committed messages after `settled`
 * that never left it, so the next holder delivers those again first.
 */
import type Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { errorCode } from './errors.js';

export const LEASE = {
  /** A holder that stops renewing has it this long after its last renewal. */
  ms: 2000,
  renewMs: 500,
  /** Appends stop this long before the lease would lapse, so a send taken is out before anyone else may take over. */
  marginMs: 500,
  /** How often a process waiting for the lease looks again. */
  pollMs: 250,
} as const;

/** A lease taken: its term, and where the previous term's deliveries may have stopped. */
export interface Term {
  term: number;
  /** Every message up to this id left the previous holder; those after it may not have. */
  settled: number;
}

/** The lease row as another process sees it, for error messages. */
export interface Holder {
  holder: string;
  term: number;
  until: number;
}

/**
 * Who numbers a partition's messages, one process at a time: the lease's narrow
 * interface. Two implementations: SequencerLease (a row in the history's
 * SQLite file, one host) and KvLease (cluster/kv-lease.ts: a key of a
 * replicated JetStream KV bucket). An implementation on a local file answers
 * at once, one over the network with a promise.
 */
export interface Lease {
  /** This process's name in the lease: host, pid, and a nonce. */
  readonly holder: string;
  /** The term held, or undefined. */
  readonly term: number | undefined;
  /** Takes the lease if nobody holds it (free, released or lapsed): the new term and the previous holder's `settled`; undefined while another holds it. */
  claim(now?: number): Term | undefined | Promise<Term | undefined>;
  /** Renews the lease held: 'held', 'lost' (another took it), or 'busy' (not done this time; try again). */
  renew(now?: number): 'held' | 'lost' | 'busy' | Promise<'held' | 'lost' | 'busy'>;
  /** May a message be numbered now: the lease is held with more than the margin left. */
  holds(now?: number): boolean;
  /** Gives the lease up, everything numbered having been delivered: the next holder delivers nothing again. */
  release(): void | Promise<void>;
  /** Gives the lease up while running on: free at once, `settled` kept, so the next holder delivers the last renewals' messages again. */
  handOver(): void | Promise<void>;
  /** Who holds the lease now, if anybody. */
  current(now?: number): Holder | undefined | Promise<Holder | undefined>;
}

/** This process's name in a lease: host, pid, and a nonce for a pid used again. */
export const leaseHolderName = (): string => `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;

/** The lease's table in the history's schema `h` (see attachHistoryFile, history-file.ts). */
const sequencerTable = (h: string) => `CREATE TABLE IF NOT EXISTS ${h}.sequencer (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  holder TEXT NOT NULL,
  term INTEGER NOT NULL,
  until INTEGER NOT NULL,
  through INTEGER NOT NULL,
  settled INTEGER NOT NULL
)`;

export class SequencerLease implements Lease {
  readonly holder = leaseHolderName();
  /** The term held, or undefined. */
  term: number | undefined;
  /** When the lease lapses unless renewed (epoch ms), as this process knows it. */
  until = 0;
  private readonly read;
  private readonly take;
  private readonly extend;
  private readonly mine;
  private readonly giveBack;
  private readonly letGo;

  constructor(
    private readonly db: Database.Database,
    h: string,
  ) {
    db.exec(sequencerTable(h));
    this.read = db.prepare(`SELECT holder, term, until, settled FROM ${h}.sequencer WHERE one = 1`);
    const newest = `(SELECT coalesce(max(id), 0) FROM ${h}.history)`;
    this.take = db.prepare(
      `INSERT INTO ${h}.sequencer (one, holder, term, until, through, settled) VALUES (1, @holder, @term, @until, ${newest}, ${newest})
       ON CONFLICT (one) DO UPDATE SET holder = excluded.holder, term = excluded.term, until = excluded.until, through = excluded.through, settled = excluded.settled`,
    );
    this.extend = db.prepare(`UPDATE ${h}.sequencer SET until = @until, settled = through, through = ${newest} WHERE holder = @holder AND term = @term`);
    this.mine = db.prepare(`SELECT 1 FROM ${h}.sequencer WHERE holder = ? AND term = ?`).pluck();
    this.giveBack = db.prepare(`UPDATE ${h}.sequencer SET until = 0, through = ${newest}, settled = ${newest} WHERE holder = ? AND term = ?`);
    this.letGo = db.prepare(`UPDATE ${h}.sequencer SET until = 0 WHERE holder = ? AND term = ?`);
  }

  /** Takes the lease if nobody holds it; undefined if somebody does. Throws SQLITE_BUSY when another process holds the write lock. */
  claim(now = Date.now()): Term | undefined {
    return this.db.transaction((): Term | undefined => {
      const row = this.read.get() as (Holder & { settled: number }) | undefined;
      if (row && row.holder !== this.holder && row.until > now && !gone(row.holder)) return undefined;
      // Above the last term, and a time: a store whose history was wiped still starts above any term an edge has seen.
      const term = Math.max((row?.term ?? 0) + 1, now);
      this.take.run({ holder: this.holder, term, until: now + LEASE.ms });
      this.term = term;
      this.until = now + LEASE.ms;
      // A first holder has nothing to deliver again: settled is the newest id, as the row now says.
      return { term, settled: row?.settled ?? Number.MAX_SAFE_INTEGER };
    }).immediate();
  }

  /** Renews the lease held: 'held', 'lost' (another took it), or 'busy' (the write lock was not had; try again). */
  renew(now = Date.now()): 'held' | 'lost' | 'busy' {
    if (this.term === undefined) return 'lost';
    try {
      if (this.extend.run({ holder: this.holder, term: this.term, until: now + LEASE.ms }).changes !== 1) return 'lost';
    } catch (err) {
      if (errorCode(err) === 'SQLITE_BUSY') return 'busy';
      throw err;
    }
    this.until = now + LEASE.ms;
    return 'held';
  }

  /** May a message be appended now: the lease is held with more than the margin left. */
  holds(now = Date.now()): boolean {
    return this.term !== undefined && now < this.until - LEASE.marginMs;
  }

  /** Inside a write transaction: the row still names this holder and term. */
  confirmed(): boolean {
    return this.term !== undefined && this.mine.get(this.holder, this.term) !== undefined;
  }

  /** Gives the lease up, everything appended having been delivered: the next holder delivers nothing again. */
  release(): void {
    if (this.term === undefined) return;
    try {
      this.giveBack.run(this.holder, this.term);
    } catch (err) {
      // Busy: the lease lapses by itself, and the next holder delivers the last moments again.
      if (errorCode(err) !== 'SQLITE_BUSY') throw err;
    }
    this.term = undefined;
  }

  /**
   * Gives the lease up while running on (a partition handed to another router): free at once, but, unlike release,
   * `settled` stays the last renewal's, so the next holder delivers again what this one's last batches carried: they
   * may reach an edge after the next holder's first, of a newer term, and be dropped there.
   */
  handOver(): void {
    if (this.term === undefined) return;
    try {
      this.letGo.run(this.holder, this.term);
    } catch (err) {
      // Busy: the lease lapses by itself, as it would after a kill -9.
      if (errorCode(err) !== 'SQLITE_BUSY') throw err;
    }
    this.term = undefined;
  }

  /** Who holds the lease now, if anybody. */
  current(now = Date.now()): Holder | undefined {
    const row = this.read.get() as Holder | undefined;
    return row && row.until > now && !gone(row.holder) ? { holder: row.holder, term: row.term, until: row.until } : undefined;
  }
}

/**
 * A holder on this host whose process is gone (kill -9) sends nothing more:
 * its lease need not be waited out. One frozen, or on another host, must be.
 */
export function gone(holder: string): boolean {
  const [host, pid] = holder.split(':');
  if (host !== hostname() || pid === String(process.pid)) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (err) {
    return errorCode(err) === 'ESRCH';
  }
}
