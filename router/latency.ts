/** Upper bounds (ms) of the send-to-write latency histogram; the last bucket is +Inf. */
export const LATENCY_BUCKETS_MS = [0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/** Per-bucket counts (not cumulative; one more than the bounds, for +Inf) and the sum, in ms. */
export interface LatencyBuckets {
  counts: number[];
  sum: number;
}

/**
 * Send-to-write latency: from the moment a send began (the API call, or the
 * router's send for a cluster) to the corked write of the message on a
 * stream. Fixed buckets, so edges can ship theirs to the router to be added up.
 */
export class LatencyHistogram implements LatencyBuckets {
  counts = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  sum = 0;

  readonly observe = (ms: number): void => {
    let i = 0;
    while (i < LATENCY_BUCKETS_MS.length && ms > LATENCY_BUCKETS_MS[i]) i++;
    this.counts[i]++;
    this.sum += ms;
  };

  /** Adds other histograms' counts to this one's (the cluster total). */
  static merge(all: LatencyBuckets[]): LatencyBuckets {
    const total: LatencyBuckets = { counts: new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0), sum: 0 };
    for (const h of all) {
      h.counts.forEach((n, i) => (total.counts[i] += n));
      total.sum += h.sum;
    }
    return total;
  }
}

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes on one host. */
export const epochMs = (): number => performance.timeOrigin + performance.now();
