/**
 * Resuming a stream: a client that saw message `after` and comes back gets
 * every message it missed since, in id order, before any live one, or, when
 * that cannot be known, an explicit "lost" at the start of its stream. The
 * stream opens, replays and logs in within one synchronous call, so no send
 * can come between what the replay read and what the stream then receives
 * live: nothing is lost or doubled at the hand-over.
 */
import { toChunk, type Chunk } from '../router/router.js';
import type { Replay } from '../subsmanager/history.js';

/** The history's answer to "what did `user` miss since `after`"; absent where the process keeps none (an edge). */
export type Replayer = (user: number, after: number) => Replay;

/** A stream that can be resumed: it takes replayed messages, or is told at its start that its history is lost and why (for its client to refetch its state). */
export interface Resumable {
  write(chunk: Chunk): number;
  lost(why: string): void;
}

/** The last id a client saw, from its request; undefined for a fresh stream. Anything but digits is an id no store gave. */
export function lastEventId(query: string | undefined, header = ''): number | undefined {
  const text = query || header;
  if (text === '') return undefined;
  return /^\d{1,16}$/.test(text) ? Number(text) : -1;
}

/**
 * Writes what `user` missed to a stream that is not logged in yet. Returns
 * false when the replay did not fit in the stream's backlog: the stream got
 * the oldest part and must end (not log in), so that its client comes back
 * for the rest from the last id it got.
 */
export function replayTo(stream: Resumable, user: number, after: number, replay: Replayer | undefined, budget: number): boolean {
  const answer = replay ? replay(user, after) : ({ lost: true, why: 'unknown' } as const);
  if (answer.lost) {
    stream.lost(answer.why);
    return true;
  }
  let bytes = 0;
  for (const message of answer.messages) {
    bytes += message.body.length + 32;
    if (bytes > budget) return false;
    stream.write(toChunk(message.body, message.id));
  }
  return true;
}

/** Ends a stream once the hub has flushed what it was given this turn (a replay that did not fit: its client comes back for the rest). */
export function endAfterFlush(hub: { schedule(stream: { flush(): void; write(chunk: Chunk): number }): void }, stream: { close(): void }): void {
  hub.schedule({ flush: () => stream.close(), write: () => 0 });
}
