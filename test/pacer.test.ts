import { describe, expect, it } from 'vitest';
import type { Replay } from '../subsmanager/history.js';
import { paced, REPLAY_BYTES_PER_TURN } from '../subsmanager/pacer.js';

/** A replay of `user`'s one message of `size` bytes, noting the order it was read in. */
const reader = (size: number, read: number[]) => (user: number): Replay => {
  read.push(user);
  return { lost: false, messages: [{ id: user, subject: user, body: Buffer.alloc(size) }], more: false };
};

describe('replays paced over event-loop turns', () => {
  it('answers a burst of large replays a few per turn, in the order asked, with other work between the turns', async () => {
    const read: number[] = [];
    const replay = paced(reader(REPLAY_BYTES_PER_TURN / 2, read));
    const answers = Array.from({ length: 8 }, (_, user) => replay(user, 0, 1 << 20));
    // Work that arrives after the burst (a send, in the server) runs once the first turn is over, not after the whole burst.
    const readWhenOtherWorkRan = await new Promise<number>((resolve) => setImmediate(() => resolve(read.length)));
    expect(readWhenOtherWorkRan).toBe(2);
    const replays = await Promise.all(answers);
    expect(read).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(replays.map((r) => (r.lost ? -1 : r.messages[0].id))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('answers many small replays in one turn', async () => {
    const read: number[] = [];
    const replay = paced(reader(100, read));
    const answers = Array.from({ length: 100 }, (_, user) => replay(user, 0, 1 << 20));
    await new Promise((resolve) => setImmediate(() => setImmediate(resolve)));
    expect(read.length).toBe(100);
    await Promise.all(answers);
  });

  it('rejects the replay whose read failed, and answers the others', async () => {
    const replay = paced((user: number, _after: number, _budget: number): Replay => {
      if (user === 1) throw new Error('file is not a database');
      return { lost: true, why: 'expired' };
    });
    const [a, b, c] = [replay(0, 0, 10), replay(1, 0, 10), replay(2, 0, 10)];
    await expect(b).rejects.toThrow('file is not a database');
    expect(await a).toEqual({ lost: true, why: 'expired' });
    expect(await c).toEqual({ lost: true, why: 'expired' });
  });
});
