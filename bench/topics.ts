/**
 * Topics in the benchmarks' ledgers (the storm, the fault run): which users'
 * streams listen to which of `topics` topics `room:1`..`room:<topics>`, and
 * which users subscribe to one (lasting). Every second user listens, every
 * third subscribes, so every sixth does both and must get each message once.
 */

/** The topic `user`'s stream listens to (`?topics=`), if any. */
export function listensTo(user: number, topics: number): string | undefined {
  return topics > 0 && user % 2 === 0 ? `room:${1 + (user % topics)}` : undefined;
}

/** The topic `user` subscribes to (POST /subscriptions), if any. */
export function subscribesTo(user: number, topics: number): string | undefined {
  return topics > 0 && user % 3 === 0 ? `room:${1 + (user % topics)}` : undefined;
}

/** The `[user, topic]` subscriptions of users 1..`users`. */
export const topicSubscriptions = (users: number, topics: number): [number, string][] =>
  Array.from({ length: users }, (_, i) => [i + 1, subscribesTo(i + 1, topics)] as const).filter((pair): pair is [number, string] => pair[1] !== undefined);

/** A random one of the topics. */
export const randomTopic = (topics: number): string => `room:${1 + Math.floor(Math.random() * topics)}`;
