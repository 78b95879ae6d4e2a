/**
 * The sequencer lease (subsmanager/sequencer.ts's Lease) as a key of a
 * JetStream KV bucket replicated over the brain's nats-servers: one key per
 * partition, its value {holder, term, through, settled} as the SQLite row has.
 * Taken with `create` (the key absent) or `update` at the revision seen
 * (released, or lapsed), renewed with `update` at the revision held: a write
 * at a stale revision is refused by the stream's leader, so two routers never
 * both take it.
 *
 * Lapsing is judged by the router that waits, on its own clock: a key whose
 * revision has not moved for the lease's 2 s since this router first saw it
 * has lapsed. No TTL on the bucket: an expired key would take with it the
 * `settled` id that tells the next holder what to deliver again. Nor a
 * wall-clock `until` compared across hosts. What keeps a deposed holder from
 * numbering is not this lease but the stream's expected last sequence
 * (cluster/replicated-history.ts): the lease only chooses who tries.
 */
import type { KV } from '@nats-io/kv';
import { errorCode } from '../subsmanager/errors.js';
import { gone, LEASE, leaseHolderName, type Holder, type Lease, type Term } from '../subsmanager/sequencer.js';

/** The bucket of the brain's leases. */
export const LEASE_BUCKET = 'c1m-leases';

/** The key of partition p of P's lease. */
export const leaseKey = (partition: number, partitions: number): string => `history.${partitions}.${partition}`;

/** The key's value. `holder` is empty once released. */
interface LeaseValue {
  holder: string;
  term: number;
  through: number;
  settled: number;
}

/** JetStream's error code "wrong last sequence": the key moved since the revision given (and for a stream, see replicated-history.ts). */
const WRONG_LAST_SEQUENCE = 10071;

/** A write refused with WRONG_LAST_SEQUENCE: another writer moved the key, or the stream, first. */
export const isStale = (err: unknown): boolean => errorCode(err) === WRONG_LAST_SEQUENCE;

export class KvLease implements Lease {
  readonly holder = leaseHolderName();
  term: number | undefined;
  /** When the lease lapses unless renewed (epoch ms, this process's clock): from when the last renewal was sent. */
  until = 0;
  /** The revision this router wrote last while holding. */
  private revision = 0;
  /** The revision last seen held by another, and when this router first saw it (epoch ms). */
  private watched = { revision: 0, at: 0 };
  private last: LeaseValue | undefined;

  constructor(
    private readonly kv: KV,
    private readonly key: string,
    /** The newest id numbered: what a renewal notes as `through`. */
    private readonly newest: () => number,
  ) {}

  async claim(now = Date.now()): Promise<Term | undefined> {
    const entry = await this.kv.get(this.key);
    const value = entry && entry.operation === 'PUT' ? (JSON.parse(entry.string()) as LeaseValue) : undefined;
    const revision = entry?.revision ?? 0;
    if (value?.holder && value.holder !== this.holder && !gone(value.holder)) {
      if (this.watched.revision !== revision) this.watched = { revision, at: now };
      if (now - this.watched.at < LEASE.ms) return undefined;
    }
    // Above the last term, and a time: a wiped bucket still starts above any term an edge has seen.
    const term = Math.max((value?.term ?? 0) + 1, now);
    // Until this holder's first renewal, a successor delivers again from the previous holder's settled id.
    const settled = value?.settled ?? Number.MAX_SAFE_INTEGER;
    const mine: LeaseValue = { holder: this.holder, term, through: value?.through ?? this.newest(), settled: value ? settled : this.newest() };
    try {
      this.revision = entry ? await this.kv.update(this.key, JSON.stringify(mine), revision) : await this.kv.create(this.key, JSON.stringify(mine));
    } catch (err) {
      if (isStale(err)) return undefined; // another router took it first
      throw err;
    }
    this.last = mine;
    this.term = term;
    this.until = now + LEASE.ms;
    // A first holder has nothing to deliver again.
    return { term, settled };
  }

  async renew(now = Date.now()): Promise<'held' | 'lost' | 'busy'> {
    if (this.term === undefined || !this.last) return 'lost';
    const next: LeaseValue = { ...this.last, settled: this.last.through, through: this.newest() };
    try {
      this.revision = await this.kv.update(this.key, JSON.stringify(next), this.revision);
    } catch (err) {
      if (isStale(err)) return 'lost';
      return 'busy';
    }
    this.last = next;
    this.until = now + LEASE.ms;
    return 'held';
  }

  holds(now = Date.now()): boolean {
    return this.term !== undefined && now < this.until - LEASE.marginMs;
  }

  /** Gives the lease up, everything numbered having been delivered: settled is the newest id. */
  async release(): Promise<void> {
    const newest = this.newest();
    await this.letGo({ through: newest, settled: newest });
  }

  async handOver(): Promise<void> {
    await this.letGo({});
  }

  private async letGo(marks: Partial<LeaseValue>): Promise<void> {
    if (this.term === undefined || !this.last) return;
    this.term = undefined;
    try {
      await this.kv.update(this.key, JSON.stringify({ ...this.last, ...marks, holder: '' }), this.revision);
    } catch {
      // Taken meanwhile, or the bus is away: the lease lapses by itself, and the next holder delivers the last moments again.
    }
  }

  async current(now = Date.now()): Promise<Holder | undefined> {
    const entry = await this.kv.get(this.key);
    if (!entry || entry.operation !== 'PUT') return undefined;
    const value = JSON.parse(entry.string()) as LeaseValue;
    if (!value.holder) return undefined;
    const seenAt = this.watched.revision === entry.revision ? this.watched.at : now;
    return { holder: value.holder, term: value.term, until: seenAt + LEASE.ms };
  }
}
