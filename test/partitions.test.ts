/**
 * The partitions of the subjects (subsmanager/partitions.ts) and the resume
 * token a stream of several partitions carries (server/resume.ts reads it).
 */
import { expect, it } from 'vitest';
import { lastEventId } from '../server/resume.js';
import { checkPartitions, formatToken, MAX_PARTITIONS, partitionOf, partitionOfSend } from '../subsmanager/partitions.js';

it('spreads neighbouring users and topics evenly, the same in every process; a send names a subject as toSubject does', () => {
  const counts = [0, 0, 0];
  for (let user = 1; user <= 30_000; user++) counts[partitionOf(user, 3)]++;
  for (const n of counts) expect(n).toBeGreaterThan(9_400);
  expect(partitionOf('photo:789', 4)).toBe(partitionOf('photo:789', 4));
  expect(new Set(Array.from({ length: 100 }, (_, i) => partitionOf(`photo:${i}`, 4)))).toEqual(new Set([0, 1, 2, 3]));
  expect(partitionOf(12345, 1)).toBe(0);
  for (let user = 1; user < 50; user++) expect(partitionOfSend(`user:${user}`, 3)).toBe(partitionOf(user, 3));
  // Not a subject: partition 0, whose leader refuses the send.
  expect(partitionOfSend('not a subject', 3)).toBe(0);
  expect(partitionOfSend(-1, 3)).toBe(0);
  expect(() => checkPartitions(0)).toThrow(RangeError);
  expect(() => checkPartitions(MAX_PARTITIONS + 1)).toThrow(RangeError);
});

it('reads a token of one id per partition back as the ids it was made of; anything else is an id no store gave', () => {
  expect(lastEventId(formatToken([1796293369340001, 1796293369350007]))).toEqual([1796293369340001, 1796293369350007]);
  expect(lastEventId('17')).toBe(17);
  expect(lastEventId(undefined)).toBeUndefined();
  for (const bad of ['1-', '-1', '1--2', '1-2-x', '1.2', Array(65).fill('1').join('-'), '12345678901234567-1']) expect(lastEventId(bad), bad).toBe(-1);
  expect(lastEventId(Array(64).fill('1').join('-'))).toHaveLength(64);
});
