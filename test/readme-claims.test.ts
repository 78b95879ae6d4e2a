/**
 * What the docs say, tested where nothing else did: the history's counters
 * on /metrics after real resumes (docs/history.md), and that store files which
 * already exist keep their mode (docs/security.md, "On disk").
 */
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { openStore, type C1m } from '../index.js';
import { api, SseClient, startServer, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

let c1m: C1m | undefined;
afterEach(() => c1m?.close());

const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1]);

it('/metrics counts resumes, the messages replayed and the streams told their history is lost', async () => {
  c1m = await startServer({ db: join(tempDir(), 'c1m.db') });
  const first = await SseClient.open(c1m.port, 1);
  const seen = (await api(c1m.apiPort, 'POST', '/send/1', 'seen')).json.id as number;
  await until('the first message', () => first.messages.includes('seen'));
  first.close();
  for (const text of ['missed one', 'missed two', 'missed three']) await api(c1m.apiPort, 'POST', '/send/1', text);
  const resumed = await SseClient.open(c1m.port, 1, `?lastEventId=${seen}`);
  await until('the replay', () => resumed.messages.length === 3);
  // Resumed with nothing missed, and from an id this store never gave.
  const current = await SseClient.open(c1m.port, 2, `?lastEventId=${seen}`);
  const stale = await SseClient.open(c1m.port, 3, '?lastEventId=12');
  await until('lost', () => stale.events.some((e) => e.event === 'lost'));
  const { text } = await api(c1m.apiPort, 'GET', '/metrics');
  expect({ resumes: metric(text, 'c1m_resumes_total'), replayed: metric(text, 'c1m_replayed_total'), lost: metric(text, 'c1m_history_lost_total') }).toEqual({ resumes: 3, replayed: 3, lost: 1 });
  [resumed, current, stale].forEach((c) => c.close());
});

it('store files that already exist keep their mode, and so does their directory', () => {
  const dir = join(tempDir(), 'shared');
  mkdirSync(dir, { mode: 0o755 });
  chmodSync(dir, 0o755);
  // Empty files: SQLite makes a new database in each, as in a directory an operator prepared.
  for (const file of ['c1m.db', 'c1m.history.db']) {
    writeFileSync(join(dir, file), '');
    chmodSync(join(dir, file), 0o640);
  }
  const store = openStore(join(dir, 'c1m.db'));
  const history = store.history({ seconds: 60, perSubject: 10 });
  history.claimLease();
  history.append(1, Buffer.from('a message'));
  history.flush();
  history.close();
  store.close();
  const mode = (name: string) => (statSync(join(dir, name)).mode & 0o777).toString(8);
  expect({ dir: mode('.'), store: mode('c1m.db'), history: mode('c1m.history.db') }).toEqual({ dir: '755', store: '640', history: '640' });
});
