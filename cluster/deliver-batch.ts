/**
 * The chunks of a deliver batch (BusMessage 'deliver') as one binary: an edge
 * reads each chunk's body, targets, send time and id where they lie, with no
 * object per field and one check of the whole batch, where a msgpack list per
 * field cost it an object per chunk and per target list, and a check per value.
 *
 * Little-endian: a header, `count` u32 and `flags` u8 (IDS: each chunk has an
 * id; WIDE_USERS: user ids are f64, for a batch holding one above 2^32 - 1,
 * else u32), then per chunk: body bytes u32, users u32, topic u32 (0: none,
 * k: the message's `topics[k - 1]`, delivered first, see Registry.deliverTopic),
 * sentAt f64 (epoch ms), id f64 (with IDS), the users, the body.
 */
import type { Subject } from '../subsmanager/subjects.js';

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
 * Walks a batch's chunks: `next()` moves to the next chunk, or returns false at the end or at the first one that does
 * not fit the bytes (`broken` then says so). Nothing is allocated per chunk but its body, and only when asked for.
 */
export class ChunkReader {
  /** The current chunk's send time, id (NaN where the batch has none), topic (0: none), users, and body's place. */
  sentAt = 0;
  id = NaN;
  topic = 0;
  users = 0;
  private usersAt = 0;
  private bodyAt = 0;
  private bodyBytes = 0;
  private at = HEADER_BYTES;
  private left: number;
  readonly count: number;
  readonly numbered: boolean;
  private readonly width: number;
  /** The bytes do not hold what their header says. */
  broken: boolean;
  private readonly view: DataView;

  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.broken = bytes.length < HEADER_BYTES || (bytes[4] & ~(IDS | WIDE_USERS)) !== 0;
    this.count = this.broken ? 0 : this.view.getUint32(0, true);
    this.left = this.count;
    this.numbered = (bytes[4] & IDS) !== 0;
    this.width = (bytes[4] & WIDE_USERS) !== 0 ? 8 : 4;
  }

  /** Every chunk was read and nothing is left over. */
  get done(): boolean {
    return !this.broken && this.left === 0 && this.at === this.bytes.length;
  }

  next(): boolean {
    if (this.left === 0 || this.broken) return false;
    const { view } = this;
    let at = this.at;
    const fixed = CHUNK_HEADER_BYTES + (this.numbered ? ID_BYTES : 0);
    if (at + fixed > view.byteLength) return this.break();
    this.bodyBytes = view.getUint32(at, true);
    this.users = view.getUint32(at + 4, true);
    this.topic = view.getUint32(at + 8, true);
    this.sentAt = view.getFloat64(at + 12, true);
    this.id = this.numbered ? view.getFloat64(at + 20, true) : NaN;
    at += fixed;
    this.usersAt = at;
    at += this.users * this.width;
    this.bodyAt = at;
    at += this.bodyBytes;
    if (at > view.byteLength) return this.break();
    this.at = at;
    this.left--;
    return true;
  }

  /** The current chunk's k-th user. */
  user(k: number): number {
    return this.width === 4 ? this.view.getUint32(this.usersAt + 4 * k, true) : this.view.getFloat64(this.usersAt + 8 * k, true);
  }

  /** The current chunk's body: a view of the batch, no copy. */
  body(): Buffer {
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + this.bodyAt, this.bodyBytes);
  }

  private break(): false {
    this.broken = true;
    return false;
  }
}

/** Why `bytes` with `topics` is not a batch (a chunk that does not fit, a bad user id, send time, id or topic number), or undefined. */
export function whyNotChunks(bytes: Uint8Array, topics: readonly string[] | undefined): string | undefined {
  const chunks = new ChunkReader(bytes);
  for (let i = 0; chunks.next(); i++) {
    if (!Number.isFinite(chunks.sentAt)) return `chunk ${i} has a bad sentAt`;
    if (chunks.numbered && !(Number.isSafeInteger(chunks.id) && chunks.id >= 0)) return `chunk ${i} has a bad id`;
    if (chunks.topic > (topics?.length ?? 0)) return `chunk ${i} names topic ${chunks.topic} of ${topics?.length ?? 0}`;
    for (let k = 0; k < chunks.users; k++) {
      const user = chunks.user(k);
      if (!(Number.isSafeInteger(user) && user > 0)) return `chunk ${i} has a bad user id`;
    }
  }
  return chunks.done ? undefined : 'its chunks do not fit its bytes';
}
