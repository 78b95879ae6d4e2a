/**
 * An edge's replays over the bus (cluster/replayer.ts) where the routers number
 * in several partitions: a partition that nobody leads this instant (no
 * responders: a hand-over, a takeover, a stream that did not acknowledge) is a
 * failure that ends the stream so that its client asks again, never "no
 * history" (lost unknown), which would restart the stream from the heads and
 * skip what it missed.
 */
import { expect, it } from 'vitest';
import type { Bus } from '../cluster/bus.js';
import type { BusMessage } from '../cluster/messages.js';
import { busReplayer } from '../cluster/replayer.js';
import type { StreamHub } from '../server/stream.js';

/** A bus on which partition 0's leader answers and partition 1 has none (nats-server's no-responders status). */
function busWithoutLeaderOf(partition: number): Bus {
  return {
    request: async (subject: string): Promise<BusMessage> => {
      if (subject === `c1m.replay.${partition}`) throw new Error(`no responders on ${subject}`);
      return { t: 'replayed', ids: [], bodies: [], more: false, head: 5 };
    },
  } as unknown as Bus;
}

it('a resume that finds a partition without a leader fails (the stream ends, its client asks again) rather than being told its history is lost', async () => {
  const replay = busReplayer(busWithoutLeaderOf(1), { partitions: 2 } as StreamHub, async () => {});
  await expect(Promise.resolve(replay(7, [3, 4], 1000, []))).rejects.toThrow(/partition 1 has no leader this moment/);
  // The stream's resume (server/resume.ts) tells "no responders" apart as no history at all: this message must not read so.
  await expect(Promise.resolve(replay(7, [3, 4], 1000, []))).rejects.not.toThrow(/no responders/);
});
