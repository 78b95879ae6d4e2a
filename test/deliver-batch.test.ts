/**
 * A deliver batch's binary layout (cluster/deliver-batch.ts): what a router
 * packs, an edge's delivery walk hands back field for field, with user ids of
 * either width, topics and ids; a body is a Buffer viewing the batch, not a copy.
 * Its envelope (run, batch, term, partition, topics) is binary too, told from
 * msgpack by its first byte; a torn or foreign one is refused, saying why.
 */
import { pack } from 'msgpackr';
import { expect, it } from 'vitest';
import { DELIVER_MARK, packChunks, whyNotChunks } from '../cluster/deliver-batch.js';
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

it('keeps the envelope field for field (a run in any script, topics, batch, term and partition at their limits), and leaves absent fields absent', () => {
  const chunks = packChunks([Buffer.from('x')], [['photo:1', 5]], [1], [9]).chunks;
  const full = { t: 'deliver' as const, chunks, topics: ['photo:1'], run: '4242-kq3x.7 ünï', batch: 2 ** 53 - 1, term: 12, partition: 2 ** 32 - 1 };
  const bytes = encode(full);
  expect(bytes[0]).toBe(DELIVER_MARK);
  const { chunks: read, ...envelope } = decode(bytes) as typeof full;
  expect(envelope).toEqual({ ...full, chunks: undefined });
  expect(Buffer.from(read).equals(chunks)).toBe(true);
  const bare = decode(encode({ t: 'deliver', chunks: packChunks([], [], [], []).chunks }));
  expect(Object.entries(bare).filter(([, v]) => v !== undefined).map(([k]) => k)).toEqual(['t', 'chunks']);
});

it('no msgpack message starts with the deliver mark: every other type still decodes from msgpack', () => {
  expect(encode({ t: 'sync' })[0]).not.toBe(DELIVER_MARK);
  expect(decode(encode({ t: 'stopped', run: 'r', batch: 3, partition: 1 }))).toEqual({ t: 'stopped', run: 'r', batch: 3, partition: 1 });
});

it('refuses a torn or foreign envelope, and a deliver in msgpack, saying why', () => {
  const good = encode({ t: 'deliver', chunks: packChunks([Buffer.from('x')], [[5]], [1], []).chunks, run: 'run-1', batch: 1, topics: ['photo:1'] });
  const runAt = 2 + 8; // mark, fields, batch
  const cases: [Uint8Array, RegExp][] = [
    [good.subarray(0, runAt + 4), /not a c1m bus message: a deliver: its envelope does not fit its bytes/],
    [Buffer.from([DELIVER_MARK]), /its envelope is not one/],
    [Buffer.from([DELIVER_MARK, 0x80]), /its envelope is not one/],
    [Buffer.concat([good.subarray(0, runAt + 2), Buffer.from([0xff]), good.subarray(runAt + 3)]), /not a c1m bus message: .*(invalid|encoded)/i],
    [encode({ t: 'deliver', chunks: packChunks([Buffer.from('x')], [[5]], [1], []).chunks, batch: 1.5 }), /a deliver with a missing or bad batch/],
    [encode({ t: 'deliver', chunks: packChunks([Buffer.from('x')], [['photo:1', 5]], [1], []).chunks, topics: ['Photo 1'] }), /a deliver with a missing or bad topics/],
    [encode({ t: 'deliver', chunks: packChunks([Buffer.from('x')], [[5]], [1], []).chunks }).subarray(0, -1), /a deliver: its chunks do not fit its bytes/],
    [pack({ t: 'deliver', chunks: packChunks([Buffer.from('x')], [[5]], [1], []).chunks }), /a deliver not in its binary layout/],
  ];
  for (const [bytes, why] of cases) expect(() => decode(bytes), why.source).toThrow(why);
});
