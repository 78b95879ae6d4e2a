import { statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type * as vegaLite from 'vega-lite';
import type { SqliteStore } from './store.js';

export interface Hub {
  user: number;
  subscribers: number;
}

export interface GraphStats {
  /** Distinct ids that subscribe or are subscribed to. */
  users: number;
  subscriptions: number;
  /** Subscribers per user, over all users (those with none count as 0). */
  subscribers: { mean: number; median: number; p99: number; max: number };
  hubs: Hub[];
  /** Users per subscriber count, for counts >= 1: [count, users] in increasing count. */
  histogram: [number, number][];
  /** Main database file plus its WAL, in bytes. */
  diskBytes: number;
}

const TOP_HUBS = 10;

/**
 * Two scans, both in key order: the primary key grouped by subscribee gives
 * every user's subscriber count; the key of subscriptions_by_subscriber gives
 * the ids that only subscribe. Both come out sorted, so the distinct users are a merge count.
 */
export function graphStats(store: SqliteStore, dbPath: string): GraphStats {
  const { db } = store;
  const bySubscribee = db.prepare('SELECT subscribee, count(*) FROM subscriptions GROUP BY subscribee').raw();
  const publishers: number[] = [];
  const counts: number[] = [];
  let subscriptions = 0;
  for (const [user, subscribers] of bySubscribee.iterate() as Iterable<[number, number]>) {
    publishers.push(user);
    counts.push(subscribers);
    subscriptions += subscribers;
  }
  const subscriberIds = db.prepare('SELECT DISTINCT subscriber FROM subscriptions_by_subscriber ORDER BY subscriber').pluck();
  let users = publishers.length;
  let i = 0;
  for (const id of subscriberIds.iterate() as Iterable<number>) {
    while (i < publishers.length && publishers[i] < id) i++;
    if (publishers[i] !== id) users++;
  }
  const degrees = new Uint32Array(users);
  degrees.set(counts);
  degrees.sort();
  const histogram = new Map<number, number>();
  for (const count of counts) histogram.set(count, (histogram.get(count) ?? 0) + 1);
  return {
    users,
    subscriptions,
    subscribers: {
      mean: users === 0 ? 0 : subscriptions / users,
      median: quantile(degrees, 0.5),
      p99: quantile(degrees, 0.99),
      max: users === 0 ? 0 : degrees[users - 1],
    },
    hubs: topHubs(publishers, counts),
    histogram: [...histogram].sort((a, b) => a[0] - b[0]),
    diskBytes: fileSize(dbPath) + fileSize(`${dbPath}-wal`),
  };
}

/** Nearest-rank quantile of sorted values. */
function quantile(sorted: Uint32Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

function topHubs(users: number[], counts: number[]): Hub[] {
  const top: Hub[] = [];
  for (let i = 0; i < users.length; i++) {
    if (top.length === TOP_HUBS && counts[i] <= top[TOP_HUBS - 1].subscribers) continue;
    top.push({ user: users[i], subscribers: counts[i] });
    top.sort((a, b) => b.subscribers - a.subscribers || a.user - b.user);
    if (top.length > TOP_HUBS) top.pop();
  }
  return top;
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** A log-log scatter of users per subscriber count, rendered headless to SVG by Vega-Lite: a power law shows as a straight line. */
async function degreeChartSvg(histogram: [number, number][]): Promise<string> {
  // Loaded only when a chart is drawn: vega and vega-lite weigh tens of MB in any process that imports them.
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const spec: vegaLite.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Degree distribution (log-log)',
    width: 640,
    height: 420,
    data: { values: histogram.map(([subscribers, users]) => ({ subscribers, users })) },
    mark: { type: 'point', filled: true, size: 12 },
    encoding: {
      x: { field: 'subscribers', type: 'quantitative', scale: { type: 'log' }, title: 'subscribers per user' },
      y: { field: 'users', type: 'quantitative', scale: { type: 'log' }, title: 'users' },
    },
  };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export async function writeDegreeChart(histogram: [number, number][], path: string): Promise<void> {
  await writeFile(path, await degreeChartSvg(histogram));
}
