import type { Pair } from './pairs.js';
import type { SubscriptionStore } from './store.js';

/** A small friends graph for a first run: users 1-6, friendships are mutual. */
const FRIENDSHIPS: [number, number][] = [
  [1, 2],
  [1, 3],
  [2, 3],
  [2, 4],
  [4, 5],
  [5, 6],
];

/** Adds the demo graph if the store is empty; returns whether it did. */
export function seedDemoGraph(store: SubscriptionStore): boolean {
  if (store.count() > 0) return false;
  store.addSubscriptions(FRIENDSHIPS.flatMap(([a, b]): Pair[] => [[a, b], [b, a]]));
  return true;
}
