/**
 * A deliver batch's binary layout (cluster/deliver-batch.ts): what a router
 * packs, an edge reads back field for field, with user ids of either width,
 * topics and ids; a body is a view of the batch, not a copy.
 */
import { expect, it } from 'vitest';
import { ChunkReader, packChunks, whyNotChunks } from '../cluster/deliver-batch.js';
import { decode, encode } from '../cluster/messages.js';
import type { Subject } from '../subsmanager/subjects.js';

function readAll(chunks: Uint8Array, topics: string[] | undefined) {
  const reader = new ChunkReader(chunks);
  const read: { body: string; targets: Subject[]; sentAt: number; id: number }[] = [];
  while (reader.next()) {
    const users = Array.from({ length: reader.users }, (_, k) => reader.user(k));
    read.push({ body: reader.body().toString(), targets: reader.topic === 0 ? users : [topics![reader.topic - 1], ...users], sentAt: reader.sentAt, id: reader.id });
  }
  expect(reader.done).toBe(true);
  return read;
}

it('reads back every chunk as packed, through the bus encoding: bodies, users, topics, send times, ids', () => {
  const bodies = ['one\n', '', 'three, longer\n', 'four\n'].map((b) => Buffer.from(b));
  const targets: Subject[][] = [[1, 2, 3], [], ['photo:1', 7], ['photo:1']];
  const sentAt = [1765000000000.125, 0, 2.5, 3];
  const ids = [10, 11, 12, 2 ** 53 - 1];
  const message = decode(encode({ t: 'deliver', ...packChunks(bodies, targets, sentAt, ids) }));
  if (message.t !== 'deliver') throw new Error('not a deliver');
  expect(message.topics).toEqual(['photo:1']);
  expect(readAll(message.chunks, message.topics)).toEqual(bodies.map((b, i) => ({ body: b.toString(), targets: targets[i], sentAt: sentAt[i], id: ids[i] })));
});

it('carries user ids above 2^32 - 1 (a batch holding one has them all as f64), and no ids where the router keeps no history', () => {
  const targets = [[1, 2 ** 32 - 1], [2 ** 32, Number.MAX_SAFE_INTEGER]];
  const { chunks } = packChunks([Buffer.from('a'), Buffer.from('b')], targets, [1, 2], []);
  expect(whyNotChunks(chunks, undefined)).toBeUndefined();
  expect(readAll(chunks, undefined)).toEqual([
    { body: 'a', targets: targets[0], sentAt: 1, id: NaN },
    { body: 'b', targets: targets[1], sentAt: 2, id: NaN },
  ]);
  expect(new ChunkReader(chunks).numbered).toBe(false);
});

it("gives each body as a view of the batch's bytes", () => {
  const { chunks } = packChunks([Buffer.from('shared')], [[1]], [0], []);
  const reader = new ChunkReader(chunks);
  reader.next();
  const body = reader.body();
  chunks[chunks.length - 1] = 0x44; // the body's last byte
  expect(body.toString()).toBe('shareD');
  expect(body.buffer).toBe(chunks.buffer);
});
