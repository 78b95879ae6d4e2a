/** A subscription: `subscriber` receives what `subscribee` sends. */
export type Pair = readonly [subscriber: number, subscribee: number];

/** User ids are positive integers that survive a round trip through a JS number. */
export function isUserId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) > 0;
}

/** Validates untrusted input (parsed JSON, msgpack, CLI args) as a list of pairs of ids up to `maxUserId` (the server's --max-user-id), or throws naming the first bad element. */
export function toPairs(value: unknown, maxUserId = Number.MAX_SAFE_INTEGER): Pair[] {
  if (!Array.isArray(value)) throw new TypeError('expected a list of [subscriber, subscribee] pairs');
  value.forEach((pair, i) => {
    if (!Array.isArray(pair) || pair.length !== 2 || !isUserId(pair[0]) || !isUserId(pair[1])) {
      throw new TypeError(`pair ${i} is not [subscriber, subscribee] with positive integer ids: ${JSON.stringify(pair)}`);
    }
    if (pair[0] > maxUserId || pair[1] > maxUserId) throw new TypeError(`pair ${i} has a user id above the limit of ${maxUserId}: ${JSON.stringify(pair)}`);
  });
  return value as Pair[];
}
