/**
 * One user's ledger in a benchmark that sends numbered messages (each send has
 * a sequence number, `seq`): the acknowledged messages addressed to the user,
 * and what its streams went through: every message that reached them (with
 * its id and arrival time), welcomes, ends and `lost` starts. From it: what
 * was missed, received twice, or received with an id lower than one before.
 */
export class Ledger {
  /** Seqs of the acknowledged messages addressed to this user. */
  readonly acked: number[] = [];
  /** The first arrival of each message, by seq: when (epoch ms) and with which message id. */
  readonly arrivals = new Map<number, { at: number; id: number }>();
  /** Epoch ms of each welcome and each end of this user's streams. */
  readonly welcomes: number[] = [];
  readonly ends: number[] = [];
  /** Streams that started with `lost <why>`: the server could not replay what was missed. */
  lost = 0;
  /** Copies of a message beyond its first. */
  duplicated = 0;
  /** Messages whose id was below one received before (a duplicate is counted as such only). */
  outOfOrder = 0;
  private lastId = 0;

  ack(seq: number): void {
    this.acked.push(seq);
  }

  receive(seq: number, id: number, at: number): void {
    if (this.arrivals.has(seq)) this.duplicated++;
    else {
      this.arrivals.set(seq, { at, id });
      if (id < this.lastId) this.outOfOrder++;
    }
    this.lastId = Math.max(this.lastId, id);
  }

  /** Acknowledged messages that have not arrived. */
  missed(): number {
    let n = 0;
    for (const seq of this.acked) if (!this.arrivals.has(seq)) n++;
    return n;
  }
}
