/**
 * The reconnect-storm benchmark (bench/storm.ts) at a small scale: an edge of
 * 300 streams killed with kill -9 while sends flow. Every one of its clients
 * must come back on the other edges with all it missed, and no client, of
 * the killed edge or of the others, may miss an acknowledged message or get
 * one twice. A third of the sends go to topics, which half the streams listen
 * to (they resume with them) and a third of the users subscribe to.
 */
import { expect, it } from 'vitest';
import { ChunkedLines } from '../bench/storm-clients.js';
import { runStorm, STORM_DEFAULTS } from '../bench/storm.js';

it('every stream of a killed edge resumes on the others with what it missed; nothing acknowledged is missed or doubled', async () => {
  const r = await runStorm({ ...STORM_DEFAULTS, storm: 300, calm: 200, edges: 3, rate: 100, topics: 10, topicShare: 0.3, warmupSeconds: 1, baselineSeconds: 1, timeoutSeconds: 10, log: () => {} });
  expect(r.sender.toTopics).toBeGreaterThan(0);
  expect(r.storm.streamsEnded).toBe(300);
  expect(r.storm.resumed, JSON.stringify(r.ledger.missedExamples)).toBe(300);
  // The storm window saw sends, so resuming meant replaying them.
  expect(r.storm.history.replayed).toBeGreaterThan(0);
  expect(r.ledger, JSON.stringify(r.ledger.missedExamples)).toMatchObject({ missed: 0, duplicated: 0, outOfOrder: 0, lost: 0, misdelivered: 0, wrongIds: 0, calmStreamsEnded: 0 });
  expect(r.sender.errors).toBe(0);
}, 45_000);

it("the storm clients' decoder reads a chunked stream's lines wherever reads cut it, and stops at a refusal", () => {
  const body = ['Welcome, Url: /test/5\n', '17963 m 5 1 2.5\n17964 m 9 2 3.5\n', '\n', 'lost expired\n'];
  const wire = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' + body.map((c) => `${c.length.toString(16)}\r\n${c}\r\n`).join('');
  for (const cut of [1, 2, 3, 7, wire.length]) {
    const lines: string[] = [];
    const decoder = new ChunkedLines((line) => lines.push(line));
    for (let at = 0; at < wire.length; at += cut) decoder.push(wire.slice(at, at + cut));
    expect(decoder.status).toBe(200);
    expect(lines, `reads of ${cut}`).toEqual(['Welcome, Url: /test/5', '17963 m 5 1 2.5', '17964 m 9 2 3.5', 'lost expired']);
  }
  const lines: string[] = [];
  const refused = new ChunkedLines((line) => lines.push(line));
  refused.push('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nserver full\n');
  expect([refused.status, lines]).toEqual([503, []]);
});
