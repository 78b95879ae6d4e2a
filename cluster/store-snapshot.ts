/**
 * Snapshots of the replicated subscription store (cluster/store-log.ts): a copy of one router's view at a known
 * sequence of the store's stream, kept in a stream of its own (C1M_STORE_SNAPSHOT, the store stream's replicas)
 * as chunks, then a manifest on a subject of its own saying which chunks, how many bytes, their SHA-256 and the
 * sequence: a writer cut short leaves the newest complete snapshot readable. Once the
 * snapshot is acknowledged, the store's stream may be purged up to that sequence: a router on an empty data dir
 * loads the snapshot and applies the stream after it, so that its rebuild grows with the store's size, not with
 * its whole history. Only the newest snapshot is kept. This file reads one (a view's start, store-log.ts);
 * store-snapshot-write.ts writes one.
 */
import { jetstreamManager, JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { createHash } from 'node:crypto';
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { createPrivately } from '../subsmanager/files.js';
import { BRAIN_SUBJECTS } from './nats-auth.js';

export const SNAPSHOT_STREAM = 'C1M_STORE_SNAPSHOT';
/** The chunks' subject, and the manifests'. */
export const SNAPSHOT_SUBJECT = `${BRAIN_SUBJECTS}.snapshot`;
export const MANIFEST_SUBJECT = `${SNAPSHOT_SUBJECT}.manifest`;
/** The header that marks a snapshot's manifest. */
export const MANIFEST_HEADER = 'C1m-Snapshot-Manifest';

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

/** Why a view on an empty data dir rebuilds from the whole stream without a word. */
export const NO_SNAPSHOT = 'there is no snapshot';
/** A snapshot that cannot be used: none, of another stream, or not the bytes its manifest says. */
export class SnapshotError extends Error {}

/**
 * Writes the newest snapshot of the stream `identity` into a new file at `path`, checked against its manifest;
 * returns its manifest, or throws SnapshotError saying why it cannot (and writes nothing).
 */
export async function loadSnapshot(nc: NatsConnection, path: string, identity: string): Promise<SnapshotManifest> {
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const manifest = await newestManifest(jsm);
  if (!manifest) throw new SnapshotError(NO_SNAPSHOT);
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

/** The newest complete snapshot's manifest; undefined if there is none. Throws SnapshotError if it does not read. */
export async function newestManifest(jsm: JetStreamManager): Promise<SnapshotManifest | undefined> {
  try {
    const last = await jsm.streams.getMessage(SNAPSHOT_STREAM, { last_by_subj: MANIFEST_SUBJECT });
    if (!last) return undefined;
    if (last.header.get(MANIFEST_HEADER) !== '1') throw new SnapshotError('the newest message on the manifests\' subject is no manifest');
    return last.json<SnapshotManifest>();
  } catch (err) {
    if (err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.StreamNotFound || err.code === JetStreamApiCodes.NoMessageFound)) return undefined;
    if (err instanceof SnapshotError) throw err;
    throw new SnapshotError(`the snapshot's manifest does not read: ${(err as Error).message}`);
  }
}
