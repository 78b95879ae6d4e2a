/**
 * Writing a snapshot of the replicated subscription store (`c1m friends snapshot`): what it is and how a view
 * loads it, store-snapshot.ts.
 */
import { DiscardPolicy, jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError, StorageType, type JetStreamManager, type StreamInfo } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { maxChangeBytes, PUBLISH_TIMEOUT_MS, PUBLISH_WINDOW, STORE_STREAM, storeStream, streamIdentity } from './store-log.js';
import { isStale } from './kv-lease.js';
import { MANIFEST_HEADER, MANIFEST_SUBJECT, newestManifest, SNAPSHOT_STREAM, SNAPSHOT_SUBJECT, SnapshotError, type SnapshotManifest } from './store-snapshot.js';

/** A view's copy, read whole, with what its manifest will say of it. */
export interface ViewCopy {
  stream: string;
  seq: number;
  bytes: Uint8Array;
  sha256: string;
}

/**
 * Copies the view at `viewPath` (a router's, open or not: one consistent read). Synchronous, seconds for a large
 * view: done before connecting to NATS, whose servers drop a client that answers no ping for 2-3 s (a router
 * copies its own view in a worker thread, store-snapshot-auto.ts).
 */
export function copyView(viewPath: string): ViewCopy {
  if (!existsSync(viewPath)) throw new SnapshotError(`${viewPath}: no such file (give the --db of a router on this host)`);
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
      const isView = file.prepare("SELECT 1 FROM sqlite_master WHERE name = 'store_log_applied'").get() !== undefined;
      place = isView ? (file.prepare('SELECT stream, seq FROM store_log_applied').get() as typeof place) : undefined;
      // Whoever loads it holds it.
      if (place) file.prepare('UPDATE store_log_applied SET holder = NULL').run();
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

/**
 * Publishes a view's copy as the newest snapshot; then, with `purge`, purges the store's stream up to its sequence.
 * Fenced, for two routers that both believe they write (one frozen, then thawed): every message expects the one
 * before it in the snapshot stream, from its last message as read before the newest manifest, and a copy older
 * than that manifest is refused. A writer that loses fails with a SnapshotError, and its manifest never lands: the
 * newest complete snapshot stays the one to load, and the store's stream is never purged past it.
 */
export async function publishSnapshot(nc: NatsConnection, copy: ViewCopy, options: { purge?: boolean } = {}): Promise<SnapshotManifest> {
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const info = await storeStream(jsm);
  if (copy.stream !== streamIdentity(info)) throw new SnapshotError(`the view is of ${copy.stream}, and the stream now is ${streamIdentity(info)}`);
  const last = (await snapshotStream(jsm, info.config.num_replicas)).state.last_seq;
  const newest = await newestManifest(jsm);
  if (newest?.stream === copy.stream && newest.seq >= copy.seq) throw new SnapshotError(`the newest snapshot holds sequence ${newest.seq} already, and this copy ${copy.seq}`);
  const chunks = await publishChunks(nc, copy.bytes, last);
  const manifest: SnapshotManifest = { stream: copy.stream, seq: copy.seq, first: last + 1, chunks, bytes: copy.bytes.length, sha256: copy.sha256 };
  const h = headers();
  h.set(MANIFEST_HEADER, '1');
  try {
    await jetstream(nc).publish(MANIFEST_SUBJECT, JSON.stringify(manifest), { headers: h, expect: { lastSequence: last + chunks }, timeout: PUBLISH_TIMEOUT_MS });
  } catch (err) {
    throw fenced(err as Error);
  }
  await purgeBelow(jsm, SNAPSHOT_STREAM, manifest.first);
  if (options.purge) await purgeBelow(jsm, STORE_STREAM, manifest.seq + 1);
  return manifest;
}

/** Publishes `bytes` as chunks of the server's max payload after sequence `last`, each expecting the one before; returns how many. */
async function publishChunks(nc: NatsConnection, bytes: Uint8Array, last: number): Promise<number> {
  const js = jetstream(nc);
  const chunkBytes = maxChangeBytes(nc);
  const inFlight: Promise<unknown>[] = [];
  let failure: Error | undefined;
  let chunks = 0;
  for (let at = 0; at < bytes.length; at += chunkBytes, chunks++) {
    // The first alone: of two writers that start together, the one whose first chunk lands goes on, the other stops there.
    while (inFlight.length >= (chunks === 1 ? 1 : PUBLISH_WINDOW)) await inFlight.shift();
    if (failure) break;
    const expect = { lastSequence: last + chunks };
    // Each failure caught at once: the window holds several, awaited in turn.
    inFlight.push(js.publish(SNAPSHOT_SUBJECT, bytes.subarray(at, at + chunkBytes), { expect, timeout: PUBLISH_TIMEOUT_MS }).catch((err: Error) => (failure ??= fenced(err))));
  }
  await Promise.all(inFlight);
  if (failure) throw failure;
  return chunks;
}

/** A publish refused for its expected last sequence: another writer's message came first. */
const fenced = (err: Error): Error => (isStale(err) ? new SnapshotError('another snapshot was being written at the same time: this one is dropped') : err);

/**
 * Purges a stream's messages before `seq`, if it holds any. nats-server 2.9 purges every message when asked to
 * purge before 0 or 1; before 2 or more, at or below its first, nothing (a writer late with its purge does no harm).
 */
async function purgeBelow(jsm: JetStreamManager, stream: string, seq: number): Promise<void> {
  if (seq > 1 && seq > (await jsm.streams.info(stream)).state.first_seq) await jsm.streams.purge(stream, { seq });
}

/** The snapshot stream, made if there is none; one made before the manifests had a subject of their own is given it. */
async function snapshotStream(jsm: JetStreamManager, replicas: number): Promise<StreamInfo> {
  const subjects = [SNAPSHOT_SUBJECT, MANIFEST_SUBJECT];
  try {
    const info = await jsm.streams.info(SNAPSHOT_STREAM);
    return info.config.subjects?.includes(MANIFEST_SUBJECT) ? info : await jsm.streams.update(SNAPSHOT_STREAM, { subjects });
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
    return await jsm.streams.add({ name: SNAPSHOT_STREAM, subjects, num_replicas: replicas, storage: StorageType.File, discard: DiscardPolicy.Old });
  }
}
