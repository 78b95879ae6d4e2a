/**
 * A map from user ids to values that a router's directory keeps its users in:
 * ids below DENSE_IDS live in pages of an array indexed by id, any others in a
 * Map. A router holds nearly every connected user of the cluster, and user ids
 * are mostly dense, so a send's lookups (one per recipient) become one indexed
 * load instead of a hash walk through a Map of a million entries
 * (docs/benchmarks/2026-12-07-million-router.md). An edge or a server holds a
 * scattered share of the ids, where pages would be mostly empty: they keep a Map.
 */
const PAGE_BITS = 7;
const PAGE_SIZE = 1 << PAGE_BITS;
const PAGE_MASK = PAGE_SIZE - 1;
/** Ids below this are paged: at most DENSE_IDS / PAGE_SIZE pages, however scattered the users (about 64 MiB of pages at worst). */
export const DENSE_IDS = 1 << 23;

/** The part of Map that the registry uses, so that it can hold its users in either. */
export interface UserMap<V> extends Iterable<[number, V]> {
  readonly size: number;
  get(id: number): V | undefined;
  has(id: number): boolean;
  set(id: number, value: V): unknown;
  delete(id: number): boolean;
  values(): Iterable<V>;
}

export class UserTable<V> implements UserMap<V> {
  /** Page p holds ids p * PAGE_SIZE … p * PAGE_SIZE + PAGE_SIZE - 1; undefined where none was ever set. */
  private readonly pages: Array<Array<V | undefined> | undefined> = [];
  /** Values set in each page now: an emptied page is dropped. */
  private readonly filled: number[] = [];
  private readonly sparse = new Map<number, V>();
  private paged = 0;

  get size(): number {
    return this.paged + this.sparse.size;
  }

  get(id: number): V | undefined {
    if (id >= DENSE_IDS) return this.sparse.get(id);
    const page = this.pages[id >>> PAGE_BITS];
    return page === undefined ? undefined : page[id & PAGE_MASK];
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  set(id: number, value: V): void {
    if (id >= DENSE_IDS) {
      this.sparse.set(id, value);
      return;
    }
    const p = id >>> PAGE_BITS;
    // Grown one slot at a time, so that the array stays packed (a store far past its end would make it a dictionary).
    while (this.pages.length <= p) {
      this.pages.push(undefined);
      this.filled.push(0);
    }
    const page = (this.pages[p] ??= new Array<V | undefined>(PAGE_SIZE).fill(undefined));
    if (page[id & PAGE_MASK] === undefined) {
      this.filled[p]++;
      this.paged++;
    }
    page[id & PAGE_MASK] = value;
  }

  delete(id: number): boolean {
    if (id >= DENSE_IDS) return this.sparse.delete(id);
    const p = id >>> PAGE_BITS;
    const page = this.pages[p];
    if (page === undefined || page[id & PAGE_MASK] === undefined) return false;
    page[id & PAGE_MASK] = undefined;
    this.paged--;
    if (--this.filled[p] === 0) this.pages[p] = undefined;
    return true;
  }

  *[Symbol.iterator](): Generator<[number, V]> {
    for (let p = 0; p < this.pages.length; p++) {
      const page = this.pages[p];
      if (page === undefined) continue;
      for (let i = 0; i < PAGE_SIZE; i++) {
        const value = page[i];
        if (value !== undefined) yield [(p << PAGE_BITS) | i, value];
      }
    }
    yield* this.sparse;
  }

  *values(): Generator<V> {
    for (const [, value] of this) yield value;
  }
}
