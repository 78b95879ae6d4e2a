/**
 * Snapshots of the replicated subscription store (cluster/store-log.ts): a copy of one router's view at a known
 * sequence of the store's stream, kept in a stream of its own (C1M_STORE_SNAPSHOT, the store stream's replicas)
 * as chunks, then a manifest saying which chunks, how many bytes, their SHA-256 and the sequence. Once the
 * snapshot is acknowledged, the store's stream may be purged up to that sequence: a router on an empty data dir
 * loads the snapshot and applies the stream after it, so that its rebuild grows with the store's size, not with
 * its whole history. Only the newest snapshot is kept.
 */
import { DiscardPolicy, jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError, StorageType, type JetStreamManager, type PubAck } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createPrivately } from '../subsmanager/files.js';
import { BRAIN_SUBJECTS } from './nats-auth.js';
import { maxChangeBytes, PUBLISH_TIMEOUT_MS, PUBLISH_WINDOW, STORE_STREAM, storeStream, streamIdentity } from './store-log.js';

export const SNAPSHOT_STREAM = 'C1M_STORE_SNAPSHOT';
export const SNAPSHOT_SUBJECT = `${BRAIN_SUBJECTS}.snapshot`;
/** The header that marks a snapshot's manifest, its last message. */
const MANIFEST_HEADER = 'C1m-Snapshot-Manifest';

export interface SnapshotManifest {
  /** The store stream (its identity, as a view keeps it) and the last sequence the copy holds. */
  stream: string;
  seq: number;
  /** The snapshot stream's sequence of the first chunk, and how many. */
  first: number;
  chunks: number;
  bytes: number;
  sha256: string;
}

/** A snapshot that cannot be used: none, of another stream, or not the bytes its manifest says. */
export const NO_SNAPSHOT = 'there is no snapshot';
export class SnapshotError extends Error {}

/** A view's copy, read whole, with what its manifest will say of it. */
export interface ViewCopy {
  stream: string;
  seq: number;
  bytes: Buffer;
  sha256: string;
}

/**
 * Copies the view at `viewPath` (a router's, open or not: one consistent read). Synchronous, seconds for a large
 * view: done before connecting to NATS, whose servers drop a client that answers no ping for 2-3 s.
 */
export function copyView(viewPath: string): ViewCopy {
  const copy = `${viewPath}.snapshot-${process.pid}`;
  rmSync(copy, { force: true });
  try {
    const view = new Database(viewPath, { readonly: true, fileMustExist: true });
    try {
      view.prepare('VACUUM INTO ?').run(copy);
    } finally {
      view.close();
    }
    const file = new Database(copy);
    let place: { stream: string; seq: number } | undefined;
    try {
      place = file.prepare('SELECT stream, seq FROM store_log_applied').get() as typeof place;
      // Whoever loads it holds it.
      file.prepare('UPDATE store_log_applied SET holder = NULL').run();
      file.pragma('journal_mode = DELETE');
    } finally {
      file.close();
    }
    if (!place) throw new SnapshotError(`${viewPath} is no view of ${STORE_STREAM}`);
    const bytes = readFileSync(copy);
    return { ...place, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
  } finally {
    rmSync(copy, { force: true });
  }
}

/** Publishes a view's copy as the newest snapshot; then, with `purge`, purges the store's stream up to its sequence. */
export async function publishSnapshot(nc: NatsConnection, copy: ViewCopy, options: { purge?: boolean } = {}): Promise<SnapshotManifest> {
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const info = await storeStream(jsm);
  if (copy.stream !== streamIdentity(info)) throw new SnapshotError(`the view is of ${copy.stream}, and the stream now is ${streamIdentity(info)}`);
  await snapshotStream(jsm, info.config.num_replicas);
  const js = jetstream(nc);
  const { bytes } = copy;
  const chunkBytes = maxChangeBytes(nc);
  const seqs: number[] = [];
  const inFlight: Promise<PubAck>[] = [];
  for (let at = 0; at < bytes.length; at += chunkBytes) {
    if (inFlight.length >= PUBLISH_WINDOW) seqs.push((await inFlight.shift()!).seq);
    inFlight.push(js.publish(SNAPSHOT_SUBJECT, bytes.subarray(at, at + chunkBytes), { timeout: PUBLISH_TIMEOUT_MS }));
  }
  for (const ack of inFlight) seqs.push((await ack).seq);
  const manifest: SnapshotManifest = { stream: copy.stream, seq: copy.seq, first: seqs[0], chunks: seqs.length, bytes: bytes.length, sha256: copy.sha256 };
  if (seqs.some((seq, i) => seq !== manifest.first + i)) throw new SnapshotError(`the chunks of the snapshot were not kept in a row (another snapshot at the same time?): ${seqs.join(', ')}`);
  const h = headers();
  h.set(MANIFEST_HEADER, '1');
  await js.publish(SNAPSHOT_SUBJECT, JSON.stringify(manifest), { headers: h, timeout: PUBLISH_TIMEOUT_MS });
  await purgeBelow(jsm, SNAPSHOT_STREAM, manifest.first);
  if (options.purge) await purgeBelow(jsm, STORE_STREAM, manifest.seq + 1);
  return manifest;
}

/** Purges a stream's messages before `seq`, if it holds any: nats-server 2.9 purges every message when asked for none (`seq` at or below the first). */
async function purgeBelow(jsm: JetStreamManager, stream: string, seq: number): Promise<void> {
  if (seq > (await jsm.streams.info(stream)).state.first_seq) await jsm.streams.purge(stream, { seq });
}

async function snapshotStream(jsm: JetStreamManager, replicas: number): Promise<void> {
  try {
    await jsm.streams.info(SNAPSHOT_STREAM);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    await jsm.streams.add({ name: SNAPSHOT_STREAM, subjects: [SNAPSHOT_SUBJECT], num_replicas: replicas, storage: StorageType.File, discard: DiscardPolicy.Old });
  }
}

/**
 * Writes the newest snapshot of the stream `identity` into a new file at `path`, checked against its manifest;
 * returns its manifest, or throws SnapshotError saying why it cannot (and writes nothing).
 */
export async function loadSnapshot(nc: NatsConnection, path: string, identity: string): Promise<SnapshotManifest> {
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  let manifest: SnapshotManifest;
  try {
    const last = await jsm.streams.getMessage(SNAPSHOT_STREAM, { last_by_subj: SNAPSHOT_SUBJECT });
    if (last?.header.get(MANIFEST_HEADER) !== '1') throw new SnapshotError('the snapshot stream ends with no manifest (a snapshot cut short)');
    manifest = last.json<SnapshotManifest>();
  } catch (err) {
    if (err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.StreamNotFound || err.code === JetStreamApiCodes.NoMessageFound)) throw new SnapshotError(NO_SNAPSHOT);
    if (err instanceof SnapshotError) throw err;
    throw new SnapshotError(`the snapshot's manifest does not read: ${(err as Error).message}`);
  }
  if (manifest.stream !== identity) throw new SnapshotError(`the snapshot is of ${manifest.stream}, and the stream now is ${identity}`);
  const part = `${path}.snapshot-${process.pid}`;
  createPrivately(part);
  const fd = openSync(part, 'w');
  let open = true;
  try {
    const hash = createHash('sha256');
    let bytes = 0;
    for (let i = 0; i < manifest.chunks; i++) {
      const chunk = await jsm.streams.getMessage(SNAPSHOT_STREAM, { seq: manifest.first + i }).catch(() => undefined);
      if (!chunk) throw new SnapshotError(`chunk ${i} of the snapshot (sequence ${manifest.first + i}) is missing`);
      hash.update(chunk.data);
      writeSync(fd, chunk.data);
      bytes += chunk.data.length;
    }
    const sha256 = hash.digest('hex');
    if (bytes !== manifest.bytes || sha256 !== manifest.sha256) throw new SnapshotError(`the snapshot's chunks are ${bytes} bytes of SHA-256 ${sha256}, its manifest says ${manifest.bytes} of ${manifest.sha256}`);
    closeSync(fd);
    open = false;
    renameSync(part, path);
    return manifest;
  } catch (err) {
    if (open) closeSync(fd);
    rmSync(part, { force: true });
    throw err;
  }
}
