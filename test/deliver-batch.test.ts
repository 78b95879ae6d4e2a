/**
 * A deliver batch's binary layout (cluster/deliver-batch.ts): what a router
 * packs, an edge's delivery walk hands back field for field, with user ids of
 * either width, topics and ids; a body is a Buffer viewing the batch, not a copy.
 */
import { expect, it } from 'vitest';
import { packChunks, whyNotChunks } from '../cluster/deliver-batch.js';
import { decode, encode } from '../cluster/messages.js';
import type { Subject } from '../subsmanager/subjects.js';
import { unpackChunks } from './helpers.js';

it('hands back every chunk as packed, through the bus encoding: bodies, users, topics, send times, ids, the partition', () => {
  const bodies = ['one\n', '', 'three, longer\n', 'four\n'].map((b) => Buffer.from(b));
  const targets: Subject[][] = [[1, 2, 3], [], ['photo:1', 7], ['photo:1']];
  const sentAt = [1765000000000.125, 0, 2.5, 3];
  const ids = [10, 11, 12, 2 ** 53 - 1];
  const message = decode(encode({ t: 'deliver', ...packChunks(bodies, targets, sentAt, ids), partition: 3 }));
  if (message.t !== 'deliver') throw new Error('not a deliver');
  expect(message.topics).toEqual(['photo:1']);
  const read = unpackChunks(message);
  expect(read.chunks.map((c) => c.toString())).toEqual(bodies.map((b) => b.toString()));
  expect(read.chunks.every((c) => Buffer.isBuffer(c) && c.partition === 3)).toBe(true);
  expect(read).toMatchObject({ targets, sentAt, ids });
});

it('carries user ids above 2^32 - 1 (a batch holding one has them all as f64), and no ids where the router keeps no history', () => {
  const targets = [[1, 2 ** 32 - 1], [2 ** 32, Number.MAX_SAFE_INTEGER]];
  const packed = packChunks([Buffer.from('a'), Buffer.from('b')], targets, [1, 2], []);
  expect(whyNotChunks(packed.chunks, undefined)).toBeUndefined();
  const read = unpackChunks({ t: 'deliver', ...packed });
  expect(read).toMatchObject({ targets, sentAt: [1, 2], ids: undefined });
  expect(read.chunks.map((c) => [c.toString(), c.id, c.partition])).toEqual([
    ['a', undefined, undefined],
    ['b', undefined, undefined],
  ]);
});

it("gives each body as a Buffer viewing the batch's bytes", () => {
  const { chunks } = packChunks([Buffer.from('shared')], [[1]], [0], []);
  const [body] = unpackChunks({ t: 'deliver', chunks }).chunks;
  chunks[chunks.length - 1] = 0x44; // the body's last byte
  expect(body.toString()).toBe('shareD');
  expect(body.buffer).toBe(chunks.buffer);
  expect(Buffer.concat([body, Buffer.from('!')]).toString()).toBe('shareD!');
});
