/**
 * Partitions of the subjects (docs/history.md, "Partitions: the sends shared among
 * routers"): a cluster of P partitions numbers each subject's messages in
 * partition hash(subject) mod P, one sequencer and one history per partition,
 * so that routers share the sends and each sender's messages keep their order.
 * P is fixed per cluster; with one partition everything is as before.
 */
import { toSubject, type Subject } from './subjects.js';

/** The most partitions a cluster may have: each is a history file, a lease and a component of every resume token. */
export const MAX_PARTITIONS = 64;

/** Checks a partition count given on a command line or in options. */
export function checkPartitions(partitions: number): number {
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) throw new RangeError(`partitions must be an integer from 1 to ${MAX_PARTITIONS}, not ${partitions}`);
  return partitions;
}

/**
 * The partition of `subject` among `partitions`. Users and topics alike go through
 * one 32-bit hash (FNV-1a over the subject's text), so that neighbouring user ids
 * (a bulk load's, a hub's followers) spread evenly and a topic lands where its text says,
 * whichever process computes it.
 */
export function partitionOf(subject: Subject, partitions: number): number {
  if (partitions === 1) return 0;
  const text = typeof subject === 'number' ? String(subject) : subject;
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % partitions;
}

/**
 * The partition of a subject as a send names it (`user:5` is user 5, as toSubject makes it); one that names no subject
 * counts as partition 0, whose leader refuses the send, saying why.
 */
export function partitionOfSend(subject: unknown, partitions: number): number {
  if (partitions === 1) return 0;
  try {
    return partitionOf(toSubject(subject), partitions);
  } catch {
    return 0;
  }
}

/**
 * A stream's resume token where there are several partitions: the last id it got from each, joined by `-`
 * (one opaque string, which an EventSource sends back as Last-Event-ID). With one partition it is that id alone.
 */
export const formatToken = (positions: readonly number[]): string => positions.join('-');
