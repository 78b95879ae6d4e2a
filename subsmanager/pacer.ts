/**
 * Replays a few per event-loop turn. A replay from an old id reads and writes
 * up to a stream's byte budget; a burst of them (an edge's streams coming
 * back at once) answered in one turn would hold up every send waiting behind
 * them. Paced, the sends and other requests run between the turns.
 */
import type { Replay } from './history.js';

/** A turn answers replays until they hold this many bytes (at least one replay a turn). */
export const REPLAY_BYTES_PER_TURN = 64 * 1024;

interface Waiting<Args> {
  args: Args;
  resolve(replay: Replay): void;
  reject(err: unknown): void;
}

/** `replay`, answered in later turns, in the order asked, about `bytesPerTurn` a turn. */
export function paced<Args extends unknown[]>(replay: (...args: Args) => Replay, bytesPerTurn = REPLAY_BYTES_PER_TURN): (...args: Args) => Promise<Replay> {
  const queue: Waiting<Args>[] = [];
  let next = 0;
  const turn = () => {
    let bytes = 0;
    while (next < queue.length && bytes < bytesPerTurn) {
      const waiting = queue[next++];
      try {
        const answer = replay(...waiting.args);
        if (!answer.lost) for (const message of answer.messages) bytes += message.body.length;
        waiting.resolve(answer);
      } catch (err) {
        waiting.reject(err);
      }
    }
    if (next < queue.length) return void setImmediate(turn);
    queue.length = 0;
    next = 0;
  };
  return (...args) =>
    new Promise<Replay>((resolve, reject) => {
      if (queue.length === 0) setImmediate(turn);
      queue.push({ args, resolve, reject });
    });
}
