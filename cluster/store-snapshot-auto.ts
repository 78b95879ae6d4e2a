/**
 * Snapshots of the replicated subscription store (store-snapshot.ts) written with no operator: the router leading
 * partition 0, one router at a time, writes one once the store's stream holds more bytes than its view's file (a
 * view on an empty data dir would then read more replaying the stream than loading a snapshot) and more than a
 * floor (--snapshot-mib: a small store is not copied again and again), or once the stream is purged and has no
 * snapshot (lost), then purges the stream up to it. A second router that believes it leads (one frozen, then
 * thawed) is kept apart by publishSnapshot's fence.
 */
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { STORE_STREAM, streamIdentity } from './store-log.js';
import { newestManifest } from './store-snapshot.js';
import { publishSnapshot, type ViewCopy } from './store-snapshot-write.js';

/** How often the leader compares the stream's bytes with its view's. */
const CHECK_MS = 5000;
/** How long after a failed snapshot the next is tried: each copies the whole view. */
const RETRY_MS = 60_000;

const COPY_WORKER_URL = import.meta.url.endsWith('.ts') ? new URL('../dist/cluster/store-snapshot-copy.js', import.meta.url) : new URL('./store-snapshot-copy.js', import.meta.url);

export interface SnapshotWriterOptions {
  /** This router's view. */
  db: string;
  /** Bytes the store's stream holds at least before a snapshot is written. */
  floorBytes: number;
  /** Whether this router leads partition 0 now. */
  leads: () => boolean;
  logger: Logger;
}

export class SnapshotWriter {
  private readonly timer: NodeJS.Timeout;
  private checking = false;
  private stopped = false;
  private retryAt = 0;
  /** The view's copy being made, if one is. */
  private copying?: Promise<ViewCopy>;

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: SnapshotWriterOptions,
  ) {
    this.timer = setInterval(() => void this.check(), CHECK_MS);
  }

  private async check(): Promise<void> {
    const { db, leads, logger } = this.options;
    if (this.checking || !leads() || performance.now() < this.retryAt) return;
    this.checking = true;
    try {
      const due = await this.due(await jetstreamManager(this.nc, { checkAPI: false }));
      if (!due) return;
      const started = performance.now();
      this.copying = copyInWorker(db);
      const copy = await this.copying;
      // Led by another meanwhile: it writes one (were both to, the fence keeps them apart).
      if (this.stopped || !leads()) return;
      const manifest = await publishSnapshot(this.nc, copy, { purge: true });
      const seconds = Math.round(performance.now() - started) / 1000;
      logger.info({ ...due, seq: manifest.seq, bytes: manifest.bytes, chunks: manifest.chunks, seconds }, 'wrote a store snapshot and purged the store stream up to it');
    } catch (err) {
      this.retryAt = performance.now() + RETRY_MS;
      if (!this.stopped) logger.warn({ error: (err as Error).message, retryInMs: RETRY_MS }, 'could not write a store snapshot');
    } finally {
      this.copying = undefined;
      this.checking = false;
    }
  }

  /** Why a snapshot is due, with the stream's and the view's bytes; undefined if none is. */
  private async due(jsm: JetStreamManager): Promise<{ why: string; streamBytes: number; viewBytes: number } | undefined> {
    const info = await jsm.streams.info(STORE_STREAM);
    const bytes = { streamBytes: info.state.bytes, viewBytes: statSync(this.options.db).size };
    if (bytes.streamBytes > Math.max(bytes.viewBytes, this.options.floorBytes)) return { why: 'the stream holds more than the view', ...bytes };
    if (info.state.first_seq <= 1) return undefined;
    // Purged, and its snapshot lost (or written before the manifests had a subject of their own): a view on an empty data dir could not start.
    const newest = await newestManifest(jsm).catch(() => undefined);
    return newest?.stream === streamIdentity(info) ? undefined : { why: 'the stream is purged, and there is no snapshot of it', ...bytes };
  }

  /** Writes no more; a copy being made is finished (its scratch file removed) before the router closes its view. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.copying?.catch(() => undefined);
  }
}

/** copyView in a worker thread. */
function copyInWorker(db: string): Promise<ViewCopy> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(COPY_WORKER_URL, { workerData: db });
    worker.once('message', resolve).once('error', reject).once('exit', (code) => reject(new Error(`the view's copy stopped (exit code ${code}) before it was made`)));
  });
}
