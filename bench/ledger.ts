/**
 * One user's ledger in a benchmark that sends numbered messages (each send has
 * a sequence number, `seq`): the acknowledged messages addressed to the user,
 * and what its streams went through: every message that reached them (with
 * its id and arrival time), welcomes, ends and `lost` starts. From it: what
 * was missed, received twice, or received with an id lower than one before.
 * An id is a message id, or a stream's token where a cluster has several
 * partitions (ids joined by `-`): then it is out of order where one
 * partition's id is lower than that partition's before.
 */
export class Ledger<Id extends number | string = number> {
  /** Seqs of the acknowledged messages addressed to this user. */
  readonly acked: number[] = [];
  /** The first arrival of each message, by seq: when (epoch ms) and with which message id (or token). */
  readonly arrivals = new Map<number, { at: number; id: Id }>();
  /** Epoch ms of each welcome and each end of this user's streams. */
  readonly welcomes: number[] = [];
  readonly ends: number[] = [];
  /** Streams that started with `lost <why>`: the server could not replay what was missed. */
  lost = 0;
  /** Copies of a message beyond its first. */
  duplicated = 0;
  /** Messages whose id was below one received before (a duplicate is counted as such only). */
  outOfOrder = 0;
  /** The highest id received so far, per partition. */
  private last: number[] = [];

  ack(seq: number): void {
    this.acked.push(seq);
  }

  receive(seq: number, id: Id, at: number): void {
    const ids = typeof id === 'number' ? [id] : id.split('-').map(Number);
    if (this.arrivals.has(seq)) this.duplicated++;
    else {
      this.arrivals.set(seq, { at, id });
      if (ids.some((n, p) => n < (this.last[p] ?? 0))) this.outOfOrder++;
    }
    this.last = ids.map((n, p) => Math.max(n, this.last[p] ?? 0));
  }

  /** Acknowledged messages that have not arrived. */
  missed(): number {
    let n = 0;
    for (const seq of this.acked) if (!this.arrivals.has(seq)) n++;
    return n;
  }
}
