/**
 * Sizing a cluster: an edge stops listening a little before its capacity, so
 * `c1m cluster --connections N` must start enough edges for N at the point
 * where they pause, or the last streams of a full run meet full edges (503).
 */
import { expect, it } from 'vitest';
import { edgesFor } from '../cluster/run.js';
import { pausesAt } from '../server/limits.js';

it('starts enough edges for the streams they take before pausing', () => {
  expect(pausesAt(19_800)).toBe(19_602);
  expect(edgesFor(1_000_000, 19_800)).toBe(52); // 51 would pause at 999,702
  for (const capacity of [1, 2, 100, 19_800]) {
    for (const connections of [1, 99, 100, 19_602, 19_603, 999_999, 1_000_000]) {
      const edges = edgesFor(connections, capacity);
      expect(edges * pausesAt(capacity), `${connections} on edges of ${capacity}`).toBeGreaterThanOrEqual(connections);
      if (edges > 1) expect((edges - 1) * pausesAt(capacity)).toBeLessThan(connections);
    }
  }
});
