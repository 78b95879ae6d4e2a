/**
 * An edge's replays (server/resume.ts): the history is a router's, so what a
 * resuming stream missed comes over the bus, asked for once the edge's
 * pending logins are out, so that the router has the stream's login before it
 * reads. With several partitions (subsmanager/partitions.ts) the stream's
 * token holds an id per partition: each partition's leader replays from its
 * own, and a new stream asks each for its head, where it starts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { After, Replayer, ReplayAnswer } from '../server/resume.js';
import type { StreamHub } from '../server/stream.js';
import type { Bus } from './bus.js';
import { SUBJECTS, type BusMessage } from './messages.js';

/** A replay not answered in this long ends its stream; the client comes back and asks again. */
const REPLAY_TIMEOUT_MS = 5000;
/** How long a resume waits for a partition that nobody leads this moment, asking again after 100, 200, 400… ms (at most 1 s apart). */
const LEADERLESS_WAIT_MS = 5000;

type Replayed = Extract<BusMessage, { t: 'replayed' }>;

async function ask(bus: Bus, subject: string, message: BusMessage): Promise<Replayed> {
  const reply = await bus.request(subject, message, REPLAY_TIMEOUT_MS);
  if (reply.t !== 'replayed') throw new Error(`unexpected answer to a replay: ${reply.t}`);
  return reply;
}

/**
 * Partition p's answer. No responders here is a partition between two leaders (a hand-over, a takeover, a stream
 * that did not acknowledge): every partitioned cluster keeps a history, so it is not "no history" (lost unknown, see
 * server/resume.ts). The edge asks again for up to `waitMs`, the stream held open meanwhile (its live messages kept
 * as during any replay): ended at once, every stream resuming then would come back every few hundred ms until a
 * leader is elected. Past `waitMs` the stream ends, and its client asks again.
 */
async function askPartition(bus: Bus, partition: number, message: BusMessage, waitMs: number): Promise<Replayed> {
  const deadline = Date.now() + waitMs;
  for (let pause = 100; ; pause = Math.min(2 * pause, 1000)) {
    try {
      return await ask(bus, SUBJECTS.replayIn(partition), message);
    } catch (err) {
      if (!/no responders/.test((err as Error).message)) throw err;
      if (Date.now() + pause > deadline) throw new Error(`partition ${partition} has no leader this moment: try again`);
      await sleep(pause);
    }
  }
}

/** Partition p's answer has its head: a router of another build would leave the stream without a start. */
const headOf = (reply: Replayed, partition: number): number => {
  if (reply.head === undefined) throw new Error(`partition ${partition}'s leader answered without its head`);
  return reply.head;
};

/**
 * The replays of an edge's streams over `bus`. `sendLogins` resolves once the logins pending now are out (once per
 * turn for all the streams that open in it); the hub's `partitions` says how many partitions the routers number in.
 */
export function busReplayer(bus: Bus, hub: StreamHub, sendLogins: () => Promise<void>, leaderWaitMs = LEADERLESS_WAIT_MS): Replayer {
  let headsOut: Promise<number[]> | undefined;
  /** Each partition's head, asked once the logins pending now are out: one request per partition for all the new streams of a turn. */
  const heads = (): Promise<number[]> =>
    (headsOut ??= sendLogins().then(() => {
      headsOut = undefined;
      return Promise.all(Array.from({ length: hub.partitions }, (_, p) => askPartition(bus, p, { t: 'head' }, leaderWaitMs).then((reply) => headOf(reply, p))));
    }));
  const fromHeads = async (answer: { lost: false; messages: [] } | { lost: true; why: 'unknown' }): Promise<ReplayAnswer> => {
    const start = await heads();
    return { ...answer, start, headed: start.map(() => true) };
  };

  return async (user, after, budget, topics) => {
    const listening = topics.length > 0 && { topics: [...topics] };
    if (hub.partitions === 1) {
      await sendLogins();
      const reply = await ask(bus, SUBJECTS.replay, { t: 'replay', user, after: typeof after === 'number' ? after : -1, budget, ...listening });
      if (reply.lost) return { lost: true, why: reply.lost };
      return { lost: false, messages: reply.ids.map((id, i) => ({ id, body: reply.bodies[i] })), more: reply.more };
    }
    const given = tokenOf(after, hub.partitions);
    // A new stream, or a token that is not one of this cluster's (another number of partitions): it starts from the heads.
    if (given === undefined) return fromHeads(after === undefined ? { lost: false, messages: [] } : { lost: true, why: 'unknown' });
    await sendLogins();
    const replies = await Promise.all(given.map((from, p) => askPartition(bus, p, { t: 'replay', user, after: from, budget: budget / given.length, ...listening }, leaderWaitMs)));
    const lost = replies.find((reply) => reply.lost)?.lost;
    // Told lost, the client fetches its state again: every partition starts from its head.
    if (lost) return { lost: true, why: lost, start: replies.map(headOf), headed: replies.map(() => true) };
    const messages = replies.flatMap((reply, partition) => reply.ids.map((id, i) => ({ id, body: reply.bodies[i], partition })));
    return { lost: false, messages, more: replies.some((reply) => reply.more), start: given };
  };
}

/** A client's token as one id per partition, or undefined where it has another number of them (or none). */
function tokenOf(after: After | undefined, partitions: number): number[] | undefined {
  if (after === undefined || typeof after === 'number') return undefined;
  return after.length === partitions ? after : undefined;
}
