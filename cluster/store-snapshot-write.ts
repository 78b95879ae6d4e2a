/**
 * Writing a snapshot of the replicated subscription store (`c1m friends snapshot`): what it is and how a view
 * loads it, store-snapshot.ts.
 */
import { DiscardPolicy, jetstream, jetstreamManager, JetStreamApiCodes, JetStreamApiError, StorageType, type JetStreamManager, type PubAck } from '@nats-io/jetstream';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { maxChangeBytes, PUBLISH_TIMEOUT_MS, PUBLISH_WINDOW, STORE_STREAM, storeStream, streamIdentity } from './store-log.js';
import { MANIFEST_HEADER, SNAPSHOT_STREAM, SNAPSHOT_SUBJECT, SnapshotError, type SnapshotManifest } from './store-snapshot.js';

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
