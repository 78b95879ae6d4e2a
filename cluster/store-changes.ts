/**
 * One change of the replicated subscription store, as one message of its
 * stream (cluster/store-log.ts). The first byte says which:
 *
 *   1 add, 2 remove   a msgpack list of [subscriber, subject] pairs (an API write; topics too)
 *   3 edges           a bulk load's edges: byte 1 holds flags (1: mutual, 2: ids as float64),
 *                     bytes 2-3 are zero, then the ids little-endian, two per edge, as u32
 *                     (8 bytes an edge, or 16 as float64 for ids above 2^32 - 1)
 *
 * Packed ids rather than msgpack for bulk loads: a third fewer bytes for the
 * 1M x 15 graph, and read with no parsing.
 */
import { pack, unpack } from 'msgpackr';
import type { ParsedEdges } from '../subsmanager/sortrows.js';
import { toPairs, type Pair } from '../subsmanager/pairs.js';

export type StoreChange =
  | { kind: 'add' | 'remove'; pairs: Pair[] }
  /** ids[2i] subscribes to ids[2i + 1], and back when mutual. */
  | { kind: 'edges'; mutual: boolean; ids: Float64Array };

const KIND = { add: 1, remove: 2, edges: 3 } as const;
const MUTUAL = 1;
const WIDE = 2;
const EDGES_HEADER = 4;

/** A message on the stream that is not a change this code reads: its sequence is skipped (store-log.ts says why). */
export class CorruptChangeError extends Error {}

/**
 * Pairs as messages of at most `maxBytes` each: one message unless the pairs do not fit, then
 * halves, recursively. Each message is applied in its own transaction.
 */
export function encodePairs(kind: 'add' | 'remove', pairs: readonly Pair[], maxBytes: number): Uint8Array[] {
  const body = pack(pairs);
  if (body.length + 1 <= maxBytes) return [Buffer.concat([Buffer.of(KIND[kind]), body])];
  if (pairs.length === 1) throw new RangeError(`one pair takes ${body.length + 1} bytes, more than a change may (${maxBytes})`);
  const half = Math.ceil(pairs.length / 2);
  return [...encodePairs(kind, pairs.slice(0, half), maxBytes), ...encodePairs(kind, pairs.slice(half), maxBytes)];
}

/** A bulk load's edges as messages of at most `maxBytes` each, in input order, each with the number of edges it holds. */
export function* encodeEdges(edges: ParsedEdges, mutual: boolean, maxBytes: number): Generator<{ data: Uint8Array; edges: number }> {
  const wide = edges.maxId > 0xffffffff;
  const idBytes = wide ? 8 : 4;
  const perMessage = Math.floor((maxBytes - EDGES_HEADER) / (2 * idBytes));
  if (perMessage < 1) throw new RangeError(`a change of ${maxBytes} bytes holds no edge`);
  for (let first = 0; first < edges.count; first += perMessage) {
    const count = Math.min(perMessage, edges.count - first);
    const message = Buffer.alloc(EDGES_HEADER + 2 * count * idBytes);
    message[0] = KIND.edges;
    message[1] = (mutual ? MUTUAL : 0) | (wide ? WIDE : 0);
    const ids = edges.ids.subarray(2 * first, 2 * (first + count));
    if (wide) for (let i = 0; i < ids.length; i++) message.writeDoubleLE(ids[i], EDGES_HEADER + 8 * i);
    else for (let i = 0; i < ids.length; i++) message.writeUInt32LE(ids[i], EDGES_HEADER + 4 * i);
    yield { data: message, edges: count };
  }
}

/** Reads a message of the stream, checking every id and subject, or throws CorruptChangeError saying what is wrong. */
export function decodeChange(data: Uint8Array): StoreChange {
  const message = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  switch (message[0]) {
    case KIND.add:
    case KIND.remove: {
      let value: unknown;
      try {
        value = unpack(message.subarray(1));
        return { kind: message[0] === KIND.add ? 'add' : 'remove', pairs: toPairs(value) };
      } catch (err) {
        throw new CorruptChangeError(`a change of pairs that does not read: ${(err as Error).message}`);
      }
    }
    case KIND.edges: {
      const flags = message[1];
      const idBytes = flags & WIDE ? 8 : 4;
      if (message.length < EDGES_HEADER || (flags & ~(MUTUAL | WIDE)) !== 0 || message[2] !== 0 || message[3] !== 0 || (message.length - EDGES_HEADER) % (2 * idBytes) !== 0)
        throw new CorruptChangeError(`a change of edges with a bad header or length (${message.length} bytes)`);
      const ids = new Float64Array((message.length - EDGES_HEADER) / idBytes);
      for (let i = 0; i < ids.length; i++) {
        const id = idBytes === 8 ? message.readDoubleLE(EDGES_HEADER + 8 * i) : message.readUInt32LE(EDGES_HEADER + 4 * i);
        if (!Number.isSafeInteger(id) || id < 1) throw new CorruptChangeError(`a change of edges with id ${id} at ${i}: ids are positive integers`);
        ids[i] = id;
      }
      return { kind: 'edges', mutual: (flags & MUTUAL) !== 0, ids };
    }
    default:
      throw new CorruptChangeError(`a change of unknown kind ${message.length === 0 ? '(empty)' : message[0]}`);
  }
}
