/**
 * The deliver message (BusMessage 'deliver') as one binary: an edge reads its
 * numbering and each chunk's body, targets, send time and id where they lie,
 * with no object per field and one check of the whole batch. A message a
 * process reads many times a second per edge costs its decoding each time, and
 * msgpack's generic decoding of even this small envelope cost an edge more than
 * the chunks of a small batch.
 *
 * Little-endian. The envelope: DELIVER_MARK u8, `fields` u8 (which of the
 * following are there, in this order): batch f64, term f64, partition u32, run
 * (u16 bytes, UTF-8), topics (u16 count, then each: u16 bytes, UTF-8). Then the
 * chunks to the end: a header, `count` u32 and `flags` u8 (IDS: each chunk has
 * an id; WIDE_USERS: user ids are f64, for a batch holding one above 2^32 - 1,
 * else u32), then per chunk: body bytes u32, users u32, topic u32 (0: none,
 * k: the message's `topics[k - 1]`, delivered first, see Registry.deliverTopic),
 * sentAt f64 (epoch ms), id f64 (with IDS), the users, the body.
 */
import type { Chunk } from '../router/router.js';
import type { Subject } from '../subsmanager/subjects.js';

/** A deliver's first byte: one that msgpack never uses, so that decoding tells this layout from every other bus message by it. */
export const DELIVER_MARK = 0xc1;
const BATCH = 1;
const TERM = 2;
const PARTITION = 4;
const RUN = 8;
const TOPICS = 16;
const ENVELOPE_BYTES = 2;
const MAX_U16 = 0xffff;

/**
 * Messages for an edge, laid out as above: each chunk goes to every stream of each of its users and, where it names one
 * of `topics`, to the streams listening to it, each stream once, with when its send began. With a history, each chunk
 * has its message id, and `run`/`batch` number the batches one router run sent this edge (`run`: the router's run and
 * its link to the edge, see EdgeLink.run), so that an edge that missed one (NATS restarted, the router crashed) knows
 * it. Where the cluster has several partitions, `partition` is the one whose ids, term and batches these are (absent: 0).
 */
export interface Deliver {
  t: 'deliver';
  chunks: Uint8Array;
  topics?: string[];
  run?: string;
  batch?: number;
  term?: number;
  partition?: number;
}

const IDS = 1;
const WIDE_USERS = 2;
const HEADER_BYTES = 5;
const CHUNK_HEADER_BYTES = 20;
const ID_BYTES = 8;
const MAX_U32 = 0xffffffff;

/** A user id's bytes in a batch: what a router's estimate of a batch's size counts. */
export const userBytes = (user: number): number => (user > MAX_U32 ? 8 : 4);
/** What a chunk costs a batch beyond its body and users, at most. */
export const CHUNK_OVERHEAD_BYTES = CHUNK_HEADER_BYTES + ID_BYTES;

/**
 * Lays out a batch: `chunks[i]` to `targets[i]` (users, or a topic first and then users), sent at `sentAt[i]`, with
 * id `ids[i]` where there are ids (an empty list: none).
 */
export function packChunks(chunks: readonly Uint8Array[], targets: readonly (readonly Subject[])[], sentAt: readonly number[], ids: readonly number[]): { chunks: Buffer; topics?: string[] } {
  const numbered = ids.length > 0;
  let bytes = HEADER_BYTES;
  let users = 0;
  let wide = false;
  let topics: Map<string, number> | undefined;
  for (let i = 0; i < chunks.length; i++) {
    bytes += CHUNK_HEADER_BYTES + (numbered ? ID_BYTES : 0) + chunks[i].length;
    for (const target of targets[i]) {
      if (typeof target === 'string') (topics ??= new Map()).set(target, topics.get(target) ?? topics.size + 1);
      else {
        users++;
        if (target > MAX_U32) wide = true;
      }
    }
  }
  const width = wide ? 8 : 4;
  const out = Buffer.allocUnsafe(bytes + users * width);
  out.writeUInt32LE(chunks.length, 0);
  out[4] = (numbered ? IDS : 0) | (wide ? WIDE_USERS : 0);
  let at = HEADER_BYTES;
  for (let i = 0; i < chunks.length; i++) {
    const list = targets[i];
    const topic = typeof list[0] === 'string' ? topics!.get(list[0])! : 0;
    const firstUser = topic === 0 ? 0 : 1;
    at = out.writeUInt32LE(chunks[i].length, at);
    at = out.writeUInt32LE(list.length - firstUser, at);
    at = out.writeUInt32LE(topic, at);
    at = out.writeDoubleLE(sentAt[i], at);
    if (numbered) at = out.writeDoubleLE(ids[i], at);
    for (let k = firstUser; k < list.length; k++) at = wide ? out.writeDoubleLE(list[k] as number, at) : out.writeUInt32LE(list[k] as number, at);
    out.set(chunks[i], at);
    at += chunks[i].length;
  }
  return topics ? { chunks: out, topics: [...topics.keys()] } : { chunks: out };
}

/**
 * A chunk's body as an edge gets it: a Buffer (what Buffer.prototype gives, as Node's own FastBuffer does) made straight
 * from the batch's memory, with its id and partition in fields of its own. Buffer.from(memory, offset, length) checks
 * its arguments through calls into Node each time, and ids added to a Buffer after it is made take a hidden-class
 * change and an out-of-object property store each.
 */
class ChunkBody extends Uint8Array {
  id: number | undefined = undefined;
  partition: number | undefined = undefined;
}
Object.setPrototypeOf(ChunkBody.prototype, Buffer.prototype);

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** `message` in its binary layout (see the top of this file); a run or topics too long for it throw. */
export function packDeliver(message: Deliver): Buffer {
  const { chunks, topics, run, batch, term, partition } = message;
  const runBytes = run === undefined ? undefined : Buffer.from(run);
  const topicBytes = topics?.map((topic) => Buffer.from(topic));
  if ((runBytes?.length ?? 0) > MAX_U16 || (topicBytes?.length ?? 0) > MAX_U16 || topicBytes?.some((t) => t.length > MAX_U16)) throw new Error('a deliver whose run or topics do not fit its layout');
  let bytes = ENVELOPE_BYTES + chunks.length;
  if (batch !== undefined) bytes += 8;
  if (term !== undefined) bytes += 8;
  if (partition !== undefined) bytes += 4;
  if (runBytes) bytes += 2 + runBytes.length;
  if (topicBytes) bytes += 2 + topicBytes.reduce((n, t) => n + 2 + t.length, 0);
  const out = Buffer.allocUnsafe(bytes);
  out[0] = DELIVER_MARK;
  out[1] = (batch !== undefined ? BATCH : 0) | (term !== undefined ? TERM : 0) | (partition !== undefined ? PARTITION : 0) | (runBytes ? RUN : 0) | (topicBytes ? TOPICS : 0);
  let at = ENVELOPE_BYTES;
  if (batch !== undefined) at = out.writeDoubleLE(batch, at);
  if (term !== undefined) at = out.writeDoubleLE(term, at);
  if (partition !== undefined) at = out.writeUInt32LE(partition, at);
  if (runBytes) {
    at = out.writeUInt16LE(runBytes.length, at);
    out.set(runBytes, at);
    at += runBytes.length;
  }
  if (topicBytes) {
    at = out.writeUInt16LE(topicBytes.length, at);
    for (const topic of topicBytes) {
      at = out.writeUInt16LE(topic.length, at);
      out.set(topic, at);
      at += topic.length;
    }
  }
  out.set(chunks, at);
  return out;
}

/**
 * The deliver that `bytes` (starting with DELIVER_MARK) lay out, its chunks a view of them; throws, saying why, where
 * its envelope does not fit its bytes. Its fields' values and its chunks are for whyNotBusMessage to check.
 */
export function unpackDeliver(bytes: Uint8Array): Deliver {
  const view = viewOf(bytes);
  const start = bytes.byteOffset;
  const end = start + bytes.byteLength;
  const fields = bytes[1];
  if (bytes.length < ENVELOPE_BYTES || (fields & ~(BATCH | TERM | PARTITION | RUN | TOPICS)) !== 0) throw new Error('a deliver: its envelope is not one');
  let at = start + ENVELOPE_BYTES;
  const need = (n: number): number => {
    if (at + n > end) throw new Error('a deliver: its envelope does not fit its bytes');
    const from = at;
    at += n;
    return from;
  };
  const text = (): string => {
    const length = view.getUint16(need(2), true);
    const from = need(length) - start;
    return utf8.decode(bytes.subarray(from, from + length));
  };
  const batch = (fields & BATCH) !== 0 ? view.getFloat64(need(8), true) : undefined;
  const term = (fields & TERM) !== 0 ? view.getFloat64(need(8), true) : undefined;
  const partition = (fields & PARTITION) !== 0 ? view.getUint32(need(4), true) : undefined;
  const run = (fields & RUN) !== 0 ? text() : undefined;
  let topics: string[] | undefined;
  if ((fields & TOPICS) !== 0) {
    const count = view.getUint16(need(2), true);
    topics = [];
    for (let i = 0; i < count; i++) topics.push(text());
  }
  return { t: 'deliver', chunks: bytes.subarray(at - start), topics, run, batch, term, partition };
}

/** Where a batch's chunks go: an edge's registry and hub (./deliveries.ts). */
export interface ChunkSink {
  /** `chunk` to every stream of `user`. */
  deliver(user: number, chunk: Chunk): void;
  /** `chunk` to the streams listening to `topic`, and to every stream of each of `users` that does not, once each (Registry.deliverTopic). */
  deliverTopic(topic: string, users: number[], chunk: Chunk): void;
  /** `chunk` is handed to each of its targets (none, where it has none); it was sent at `at` (epoch ms). */
  sent(chunk: Chunk, at: number): void;
}

/**
 * The last memory a batch was read from, and a view of all of it: a batch is checked, then delivered, and the batches
 * of one socket read share its memory, so they share one view (a DataView is made in V8's runtime, not in JIT code).
 */
let lastMemory: ArrayBufferLike | undefined;
let lastView: DataView;

/** A view of all the memory that `bytes` lie in (offsets in it are byteOffset-based). */
function viewOf(bytes: Uint8Array): DataView {
  if (bytes.buffer !== lastMemory) {
    lastView = new DataView(bytes.buffer);
    lastMemory = bytes.buffer;
  }
  return lastView;
}

/** Where a batch lies in its memory, and its header's fields, where its bytes hold one (see whyNotChunks). */
function header(bytes: Uint8Array) {
  const view = viewOf(bytes);
  const start = bytes.byteOffset;
  const flags = bytes[4];
  return { memory: bytes.buffer, view, start, end: start + bytes.byteLength, count: view.getUint32(start, true), numbered: (flags & IDS) !== 0, width: (flags & WIDE_USERS) !== 0 ? 8 : 4 };
}

/**
 * Hands every chunk of a batch to `sink`, in order, each body a view of the batch (no copy) with its id where the batch
 * has them, and `partition`. Only for bytes whyNotChunks took (decode checks every bus message): nothing is checked here.
 */
export function deliverChunks(bytes: Uint8Array, topics: readonly string[] | undefined, partition: number | undefined, sink: ChunkSink): void {
  const { memory, view, start, count, numbered, width } = header(bytes);
  let at = start + HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const bodyBytes = view.getUint32(at, true);
    const users = view.getUint32(at + 4, true);
    const topic = view.getUint32(at + 8, true);
    const sentAt = view.getFloat64(at + 12, true);
    const id = numbered ? view.getFloat64(at + 20, true) : undefined;
    at += CHUNK_HEADER_BYTES + (numbered ? ID_BYTES : 0);
    const usersEnd = at + users * width;
    const chunk = new ChunkBody(memory as ArrayBuffer, usersEnd, bodyBytes);
    chunk.id = id;
    chunk.partition = partition;
    if (topic !== 0) {
      const subscribers: number[] = [];
      for (; at < usersEnd; at += width) subscribers.push(width === 4 ? view.getUint32(at, true) : view.getFloat64(at, true));
      sink.deliverTopic(topics![topic - 1], subscribers, chunk as unknown as Chunk);
    } else if (width === 4) for (; at < usersEnd; at += 4) sink.deliver(view.getUint32(at, true), chunk as unknown as Chunk);
    else for (; at < usersEnd; at += 8) sink.deliver(view.getFloat64(at, true), chunk as unknown as Chunk);
    sink.sent(chunk as unknown as Chunk, sentAt);
    at = usersEnd + bodyBytes;
  }
}

/** Why `bytes` with `topics` is not a batch (a chunk that does not fit, a bad user id, send time, id or topic number), or undefined. */
export function whyNotChunks(bytes: Uint8Array, topics: readonly string[] | undefined): string | undefined {
  if (bytes.length < HEADER_BYTES || (bytes[4] & ~(IDS | WIDE_USERS)) !== 0) return 'its header is not one';
  const { view, start, end, count, numbered, width } = header(bytes);
  const fixed = CHUNK_HEADER_BYTES + (numbered ? ID_BYTES : 0);
  const topicCount = topics?.length ?? 0;
  let at = start + HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + fixed > end) return 'its chunks do not fit its bytes';
    const bodyBytes = view.getUint32(at, true);
    const users = view.getUint32(at + 4, true);
    const topic = view.getUint32(at + 8, true);
    if (topic > topicCount) return `chunk ${i} names topic ${topic} of ${topicCount}`;
    if (!Number.isFinite(view.getFloat64(at + 12, true))) return `chunk ${i} has a bad sentAt`;
    if (numbered) {
      const id = view.getFloat64(at + 20, true);
      if (!(Number.isSafeInteger(id) && id >= 0)) return `chunk ${i} has a bad id`;
    }
    at += fixed;
    const usersEnd = at + users * width;
    if (usersEnd + bodyBytes > end) return 'its chunks do not fit its bytes';
    // A u32 user id is a safe integer: only 0 is no user.
    if (width === 4) {
      for (; at < usersEnd; at += 4) if (view.getUint32(at, true) === 0) return `chunk ${i} has a bad user id`;
    } else {
      for (; at < usersEnd; at += 8) {
        const user = view.getFloat64(at, true);
        if (!(Number.isSafeInteger(user) && user > 0)) return `chunk ${i} has a bad user id`;
      }
    }
    at = usersEnd + bodyBytes;
  }
  return at === end ? undefined : 'its chunks do not fit its bytes';
}
