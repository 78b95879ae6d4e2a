/**
 * Resuming a stream: a client that saw message `after` and comes back gets
 * every message it missed since, in id order, before any live one, or, when
 * that cannot be known, an explicit "lost" at the start of its stream.
 *
 * The answer may come later: in one process from its history, paced a few
 * replays a turn (subsmanager/pacer.ts); on an edge from a router's, over the
 * bus. A holder stands in for the stream in the registry meanwhile, logged in
 * before the replay is asked for and keeping the live messages, and the
 * stream takes its place once the replay is written, with only the held
 * messages the replay did not already hold: nothing is lost or doubled.
 *
 * Where a cluster has several partitions (subsmanager/partitions.ts), a
 * stream's token holds its last id from each, and a new stream too starts
 * this way: the edge asks each partition where the stream starts (its head,
 * after the stream's login), and the stream takes its place from there.
 */
import { NO_TOPICS, type Connection, type Registry } from '../router/registry.js';
import { toChunk, type Chunk } from '../router/router.js';
import { replayTakes, type Replay } from '../subsmanager/history.js';

/**
 * Where a stream of several partitions starts: its last id from each (`start`), and which of them are the
 * partition's head rather than the client's (`headed`: a new stream's, or one whose history is lost).
 */
export interface Start {
  start?: number[];
  headed?: boolean[];
}

/** A history's answer, with `more` when a byte budget cut the messages short; with several partitions, each message's and where the stream starts. */
export type ReplayAnswer = (Replay | { lost: false; messages: { id: number; body: Uint8Array; partition?: number }[]; more?: boolean }) & Start;

/** The last id a client saw: one id, or its token's ids, one per partition (a cluster of several: see subsmanager/partitions.ts). */
export type After = number | number[];

/**
 * What `user` missed since `after` (undefined: a new stream of several partitions, which asks only where it starts), and of
 * the `topics` its stream listens to, within about `budget` bytes (the first message always, see replayTakes): at once
 * (this process's history), or later (a router's, over the bus).
 */
export type Replayer = (user: number, after: After | undefined, budget: number, topics: readonly string[]) => ReplayAnswer | Promise<ReplayAnswer>;

/**
 * A stream that can be resumed: it takes replayed messages (its write skips a message whose id is not above the last
 * one it wrote, see ChunkedStream.write), or is told at its start that its history is lost and why (for its client to
 * refetch its state).
 */
export interface Resumable extends Connection {
  lost(why: string): void;
  /** A chunk's bytes as this stream frames it: a replay's budget counts these. */
  framedSize(chunk: Chunk): number;
  /** True once the stream has ended (its client went away, or it was closed). */
  readonly ended: boolean;
  /** Where the stream stands in each partition, before anything is written to it (several partitions). */
  startAt(start: number[]): void;
  /** Whether the stream shows ids (a plain /test/<id> does not: it cannot resume, so a new one needs no start). */
  readonly numbered: boolean;
}

export interface ResumeHub {
  readonly registry: Registry;
  readonly maxBacklog: number;
  replay?: Replayer;
  /** With several, a new stream too asks where it starts. */
  readonly partitions: number;
  schedule(stream: { flush(): void; write(chunk: Chunk): number }): void;
}

/**
 * The last id a client saw, from its request; undefined for a fresh stream. Digits are an id, ids joined by `-` a
 * token of several partitions; anything else is an id no store gave (-1). The header first: an EventSource opened
 * with ?lastEventId= keeps that URL and sends the newer id it saw as the header.
 */
export function lastEventId(query: string | undefined, header = ''): After | undefined {
  const text = header || query || '';
  if (text === '') return undefined;
  if (/^\d{1,16}$/.test(text)) return Number(text);
  return /^\d{1,16}(-\d{1,16}){1,63}$/.test(text) ? text.split('-').map(Number) : -1;
}

const UNKNOWN: ReplayAnswer = { lost: true, why: 'unknown' };

/** Logs a new stream in; a resuming one (`after` given) first gets what it missed, and with several partitions a new one first learns where it starts. */
export function resume(hub: ResumeHub, stream: Resumable, after: After | undefined): void {
  if (after === undefined && (hub.partitions === 1 || !stream.numbered)) return void hub.registry.login(stream);
  const budget = hub.maxBacklog / 2;
  // The holder is logged in before the replay is asked for: an edge sends its pending logins with the request,
  // so the router hears this one before it reads the replay, and what it numbers after that read reaches the holder.
  const holder = new Holder(stream.user, stream.topics);
  hub.registry.login(holder);
  const answer = hub.replay ? hub.replay(stream.user, after, budget, stream.topics ?? NO_TOPICS) : UNKNOWN;
  if (!(answer instanceof Promise)) return handOver(hub, holder, stream, answer, budget);
  answer.then(
    (reply) => handOver(hub, holder, stream, reply, budget),
    // No router keeps a history (no responders): lost. Any other failure ends the stream, and its client tries again.
    (err: Error) => handOver(hub, holder, stream, /no responders/.test(err.message) ? UNKNOWN : null, budget),
  );
}

/**
 * The replay is here: the stream takes the holder's place, with the held
 * messages; those the replay also held the stream skips by their ids.
 */
function handOver(hub: ResumeHub, holder: Holder, stream: Resumable, reply: ReplayAnswer | null, budget: number): void {
  hub.registry.logout(holder);
  if (stream.ended) return;
  if (reply?.start) stream.startAt(startOf(reply, holder.held));
  if (reply === null || !write(stream, reply, budget)) return endAfterFlush(hub, stream);
  for (const chunk of holder.held) stream.write(chunk);
  // A holder closed meanwhile (a drain) stopped keeping what came live: the stream ends, and its client resumes from what it got.
  if (holder.closed) return endAfterFlush(hub, stream);
  hub.registry.login(stream);
}

/**
 * Writes an answer to a stream that is not logged in yet. False when the
 * replay did not fit the budget (as framed for this stream): the stream got
 * the oldest part and must end, so that its client comes back for the rest
 * from the last id it got. The first message is always written, alone if it
 * is larger than the budget: every resume makes progress.
 */
function write(stream: Resumable, answer: ReplayAnswer, budget: number): boolean {
  if (answer.lost) {
    stream.lost(answer.why);
    return true;
  }
  let bytes = 0;
  for (const message of answer.messages) {
    const chunk = toChunk(message.body, message.id);
    if ('partition' in message && message.partition !== undefined) chunk.partition = message.partition;
    const size = stream.framedSize(chunk);
    if (!replayTakes(bytes, size, budget)) return false;
    stream.write(chunk);
    bytes += size;
  }
  // A first message larger than the budget went alone: the stream ends after it rather than take live ones on top.
  return !('more' in answer && answer.more) && bytes <= budget;
}

/**
 * Where the stream starts in each partition: as answered, except that a partition's head (a new stream's start) moves
 * back before the first message the holder kept of it. Those reached the stream's login, and may be numbered below
 * the head read after them: the stream writes them, and every later one of that partition reaches it too.
 */
function startOf({ start, headed }: Start, held: Chunk[]): number[] {
  const from = start!.slice();
  for (const chunk of held) {
    const p = chunk.partition;
    if (p !== undefined && headed?.[p] && chunk.id !== undefined && chunk.id <= from[p]) from[p] = chunk.id - 1;
  }
  return from;
}

/** Ends a stream once the hub has flushed what it was given this turn (a replay that did not fit: its client comes back for the rest). */
function endAfterFlush(hub: ResumeHub, stream: { close(): void }): void {
  hub.schedule({ flush: () => stream.close(), write: () => 0 });
}

/** Stands in for a stream in the registry while its replay is on its way: keeps what the router delivers live. */
class Holder implements Connection {
  readonly held: Chunk[] = [];
  closed = false;
  constructor(
    readonly user: number,
    /** The stream's topics: what is sent to them meanwhile is held too (an edge reports them with the login). */
    readonly topics?: readonly string[],
  ) {}
  write(chunk: Chunk): number {
    this.held.push(chunk);
    return 1;
  }
  close(): void {
    this.closed = true;
  }
}
