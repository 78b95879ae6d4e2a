import { SubjectError, toSubject, type Subject } from './subjects.js';

/** A subscription: `subscriber` (a user) receives what is sent to `subject` (a user or a topic, see subjects.ts). */
export type Pair = readonly [subscriber: number, subject: Subject];

/**
 * Validates untrusted input (parsed JSON, msgpack, CLI args) as a list of
 * [subscriber, subject] pairs, users up to `maxUserId` (the server's
 * --max-user-id), or throws naming the first bad element. Returns the pairs
 * canonical (`user:5` as 5, see subjects.ts).
 */
export function toPairs(value: unknown, maxUserId = Number.MAX_SAFE_INTEGER): Pair[] {
  if (!Array.isArray(value)) throw new TypeError('expected a list of [subscriber, subject] pairs');
  return value.map((pair, i): Pair => {
    if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError(`pair ${i} is not [subscriber, subject]: ${JSON.stringify(pair)}`);
    try {
      const subscriber = toSubject(pair[0], maxUserId);
      if (typeof subscriber !== 'number') throw new SubjectError(`a subscriber is a user, not ${subscriber}`);
      return [subscriber, toSubject(pair[1], maxUserId)];
    } catch (err) {
      throw new TypeError(`pair ${i} ${JSON.stringify(pair)}: ${(err as Error).message}`);
    }
  });
}
