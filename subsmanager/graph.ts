import type { Writable } from 'node:stream';

/**
 * An undirected graph as an edge list: edge i joins endpoints[2i] and
 * endpoints[2i + 1]. User ids are 1..users.
 */
export interface EdgeList {
  users: number;
  endpoints: Uint32Array;
}

export interface BarabasiAlbertOptions {
  users: number;
  /** Edges each new user brings, to that many distinct existing users. */
  m: number;
  seed: number;
  /** Called now and then with the number of edges generated so far. */
  onProgress?: (edges: number) => void;
}

/** Edge count of the model: a clique on the first m+1 users, then m edges per further user. */
export function barabasiAlbertEdgeCount(users: number, m: number): number {
  return (m * (m + 1)) / 2 + (users - m - 1) * m;
}

/**
 * Barabási–Albert preferential attachment, after Batagelj & Brandes (2005):
 * the edge list itself is the endpoint array in which every user appears once
 * per unit of degree, so a uniformly random slot of it picks a user with
 * probability proportional to degree, in O(1). Linear time and memory.
 *
 * Users 1..m+1 start as a clique (every one of them has degree m, so the first
 * newcomer's m distinct targets exist). Each later user v draws its m targets
 * from the slots filled before v arrived, redrawing a target it already chose:
 * no self loops (v is not in those slots yet) and no duplicate edges.
 */
export function generateBarabasiAlbert({ users, m, seed, onProgress }: BarabasiAlbertOptions): EdgeList {
  if (!Number.isSafeInteger(m) || m < 1) throw new RangeError(`m must be a positive integer, got ${m}`);
  if (!Number.isSafeInteger(users) || users < m + 1) throw new RangeError(`users must be an integer >= m + 1 = ${m + 1}, got ${users}`);
  if (users > 0xffffffff) throw new RangeError(`users must be below 2^32, got ${users}`);
  const edges = barabasiAlbertEdgeCount(users, m);
  const endpoints = new Uint32Array(2 * edges);
  let slot = 0;
  for (let a = 1; a <= m + 1; a++) {
    for (let b = a + 1; b <= m + 1; b++) {
      endpoints[slot++] = b;
      endpoints[slot++] = a;
    }
  }
  const random = xoshiro128ss(seed);
  // chosenBy[u] === v marks u as already a target of v: O(1) duplicate check.
  const chosenBy = new Uint32Array(users + 1);
  const progressEvery = 1 << 16;
  for (let v = m + 2; v <= users; v++) {
    const filled = slot;
    for (let k = 0; k < m; k++) {
      let target: number;
      do target = endpoints[Math.floor(random() * filled)];
      while (chosenBy[target] === v);
      chosenBy[target] = v;
      endpoints[slot++] = v;
      endpoints[slot++] = target;
    }
    if (onProgress && (v & (progressEvery - 1)) === 0) onProgress(slot / 2);
  }
  onProgress?.(edges);
  return { users, endpoints };
}

/** xoshiro128** seeded through splitmix32: fast, small, and the same sequence for the same seed everywhere. Returns floats in [0, 1). */
export function xoshiro128ss(seed: number): () => number {
  let s = seed >>> 0;
  const splitmix32 = (): number => {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix32();
  let b = splitmix32();
  let c = splitmix32();
  let d = splitmix32();
  return () => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result / 4294967296;
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

const CHUNK_BYTES = 1 << 20;
/** Longest line: two 10-digit ids, a space and a newline. */
const MAX_LINE_BYTES = 22;
const SPACE = 0x20;
const NEWLINE = 0x0a;
const ZERO = 0x30;

/**
 * Writes `A B\n` per edge, formatting digits straight into 1 MiB buffers and
 * waiting for 'drain' whenever the stream asks to, so memory stays flat
 * whatever the consumer's speed. Does not end the stream.
 */
export async function writeEdgeList(edges: EdgeList, out: Writable, onProgress?: (edges: number) => void): Promise<void> {
  const { endpoints } = edges;
  const edgeCount = endpoints.length / 2;
  let i = 0;
  while (i < edgeCount) {
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    let at = 0;
    for (; i < edgeCount && at <= CHUNK_BYTES - MAX_LINE_BYTES; i++) {
      at = writeDecimal(chunk, at, endpoints[2 * i]);
      chunk[at++] = SPACE;
      at = writeDecimal(chunk, at, endpoints[2 * i + 1]);
      chunk[at++] = NEWLINE;
    }
    onProgress?.(i);
    if (!out.write(chunk.subarray(0, at))) await waitForDrain(out);
  }
}

function waitForDrain(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      out.off('error', onError);
      resolve();
    };
    const onError = (err: Error): void => {
      out.off('drain', onDrain);
      reject(err);
    };
    out.once('drain', onDrain);
    out.once('error', onError);
  });
}

/** Writes `value` (an integer below 2^32) in ASCII at `at`; returns the offset after it. */
function writeDecimal(buffer: Buffer, at: number, value: number): number {
  const end = at + decimalDigits(value);
  let rest = value;
  let i = end;
  do {
    const quotient = (rest / 10) >>> 0;
    buffer[--i] = ZERO + rest - quotient * 10;
    rest = quotient;
  } while (rest > 0);
  return end;
}

function decimalDigits(value: number): number {
  let digits = 1;
  for (let bound = 10; value >= bound && digits < 10; bound *= 10) digits++;
  return digits;
}
