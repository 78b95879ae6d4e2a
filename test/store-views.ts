/**
 * Store views of the replicated subscription store (cluster/store-log.ts) opened in a test's process, for
 * test/store-log*.test.ts.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { connectJetStream } from '../cluster/jetstream.js';
import { ROUTER_INBOX } from '../cluster/nats-auth.js';
import { openReplicatedStore, type ReplicatedStore } from '../cluster/store-log.js';
import type { JetStreamServers } from '../loadgen/server-process.js';
import { openStore } from '../subsmanager/store.js';
import { runCli, tempDir } from './helpers.js';

/** What a logger printed, one parsed line each. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

export interface View {
  nc: NatsConnection;
  store: ReplicatedStore;
  db: string;
  lines: Record<string, unknown>[];
  close(): Promise<void>;
}

const views = new Set<View>();

/** Every view a test file opened and left open, closed. */
export async function closeViews(): Promise<void> {
  for (const view of [...views]) await view.close();
}

/** A store view in this process on its own JetStream connection with the routers' credentials; its log lines kept. */
export async function openView(servers: JetStreamServers, db: string): Promise<View> {
  const nc = await connectJetStream(servers.urls, { name: 'test-view', creds: servers.creds, inboxPrefix: ROUTER_INBOX });
  const { logger, lines } = capturedLogger();
  const store = await openReplicatedStore(nc, { db, replicas: servers.replicas, logger, failed: (err) => lines.push({ msg: 'failed', error: err.message }) }).catch(async (err: Error) => {
    await nc.close();
    throw err;
  });
  const view: View = {
    nc,
    store,
    db,
    lines,
    async close() {
      views.delete(view);
      await store.close();
      await nc.close();
    },
  };
  views.add(view);
  return view;
}

/** Every row of both tables of a view's file, hashed: two views hold the same pairs when these are equal. */
export function contentOf(db: string): { rows: number; digest: string } {
  const file = new Database(db, { readonly: true });
  try {
    const hash = createHash('sha256');
    let rows = 0;
    for (const row of file.prepare('SELECT subscribee, subscriber FROM subscriptions ORDER BY 1, 2').raw().iterate()) {
      hash.update(`${JSON.stringify(row)}\n`);
      rows++;
    }
    for (const row of file.prepare('SELECT subscriber, subscribee FROM subscriptions_by_subscriber ORDER BY 1, 2').raw().iterate()) hash.update(`${JSON.stringify(row)}\n`);
    return { rows, digest: hash.digest('hex') };
  } finally {
    file.close();
  }
}

export const appliedRow = (db: string) => {
  const file = new Database(db, { readonly: true });
  try {
    return file.prepare('SELECT stream, seq FROM store_log_applied').all();
  } finally {
    file.close();
  }
};

/** What a plain SQLite store holds after loading `graph` and the same changes, written without the stream. */
export async function plainStore(graph: string, changes: (store: ReturnType<typeof openStore>) => void): Promise<ReturnType<typeof contentOf>> {
  const plain = join(tempDir(), 'plain.db');
  const loaded = await runCli(['friends', 'load', graph, '--db', plain]);
  if (loaded.code !== 0) throw new Error(`friends load ${graph}: ${loaded.stderr}`);
  const reference = openStore(plain);
  changes(reference);
  reference.close();
  return contentOf(plain);
}
