/**
 * An edge's replays over the bus (cluster/replayer.ts) where the routers number
 * in several partitions: a partition that nobody leads this instant (no
 * responders: a hand-over, a takeover, a stream that did not acknowledge) is
 * asked again for a while, the stream held open; still without a leader, it is a
 * failure that ends the stream so that its client asks again, never "no
 * history" (lost unknown), which would restart the stream from the heads and
 * skip what it missed.
 */
import { expect, it } from 'vitest';
import type { Bus } from '../cluster/bus.js';
import type { BusMessage } from '../cluster/messages.js';
import { busReplayer } from '../cluster/replayer.js';
import type { StreamHub } from '../server/stream.js';

/**
 * A bus on which partition 0's leader answers and partition 1 has none (nats-server's no-responders status) for its
 * first `leaderless` requests; `asked` counts partition 1's requests.
 */
function busWithoutLeaderOf(partition: number, leaderless = Infinity) {
  const counts = { asked: 0 };
  const bus = {
    request: async (subject: string): Promise<BusMessage> => {
      if (subject === `c1m.replay.${partition}` && ++counts.asked <= leaderless) throw new Error(`no responders on ${subject}`);
      return { t: 'replayed', ids: subject === `c1m.replay.${partition}` ? [9] : [], bodies: subject === `c1m.replay.${partition}` ? [new Uint8Array([1])] : [], more: false, head: 5 };
    },
  } as unknown as Bus;
  return { bus, counts };
}

it('a resume that finds a partition without a leader for too long fails (the stream ends, its client asks again) rather than being told its history is lost', async () => {
  const { bus, counts } = busWithoutLeaderOf(1);
  const replay = busReplayer(bus, { partitions: 2 } as StreamHub, async () => {}, 400);
  const t0 = Date.now();
  await expect(Promise.resolve(replay(7, [3, 4], 1000, []))).rejects.toThrow(/partition 1 has no leader this moment/);
  // Asked again meanwhile (after 100 and 200 ms), and given up within the wait.
  expect(counts.asked).toBe(3);
  expect(Date.now() - t0).toBeLessThan(1000);
  // The stream's resume (server/resume.ts) tells "no responders" apart as no history at all: this message must not read so.
  await expect(Promise.resolve(replay(7, [3, 4], 1000, []))).rejects.not.toThrow(/no responders/);
});

it('a resume that finds a partition between two leaders waits for the new one: the stream is answered, not ended', async () => {
  const { bus, counts } = busWithoutLeaderOf(1, 2);
  const replay = busReplayer(bus, { partitions: 2 } as StreamHub, async () => {});
  const answer = await replay(7, [3, 4], 1000, []);
  expect(counts.asked).toBe(3);
  expect(answer).toMatchObject({ lost: false, start: [3, 4], messages: [{ id: 9, partition: 1 }] });
});
