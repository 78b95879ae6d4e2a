import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { bucketValue, FLOOD_WORKER, parseConfig, parseSources, planWorkers, rowsFromRanges, runFlood, streamsPerServer, type FloodOptions, type FloodTotals } from '../loadgen/flood.js';
import { loadgenCommand } from '../cli/loadgen.js';
import { runMsggen } from '../loadgen/msggen.js';
import { epochMs } from '../router/latency.js';
import { parseIdRange } from '../server/options.js';
import { api, spawnServer, StreamClient, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

/** Sockets held now from these source addresses to `port`, as "address:port" of the local end. */
function localEnds(sourcePrefix: string, port: number, state = 'established'): string[] {
  const out = execFileSync('ss', ['-Htn', 'state', state, 'dport', `= :${port}`], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[2])
    .filter((local) => local?.startsWith(sourcePrefix));
}

/** Bytes waiting to be read in the established socket whose local end is `local` ("address:port"). */
function receiveQueue(local: string): number {
  const out = execFileSync('ss', ['-Htn', 'state', 'established', 'src', local], { encoding: 'utf8' });
  return Number(out.trim().split(/\s+/)[0] || 0);
}

const stats = async (apiPort: number, headers: Record<string, string> = {}) => (await api(apiPort, 'GET', '/stats', undefined, headers)).json;

describe('flood planning', () => {
  it('parses id ranges, source ranges and the original config rows', () => {
    expect(parseIdRange('1-1000000')).toEqual([1, 1_000_000]);
    expect(parseIdRange('7')).toEqual([7, 7]);
    expect(() => parseIdRange('5-1')).toThrow(/N-M/);
    expect(parseSources('127.0.1.254-127.0.2.1,10.0.0.1')).toEqual(['127.0.1.254', '127.0.1.255', '127.0.2.0', '127.0.2.1', '10.0.0.1']);
    expect(() => parseSources('127.0.1.9-127.0.1.1')).toThrow(/range/);
    expect(rowsFromRanges(['a', 'b', 'c'], [1, 10])).toEqual([
      { source: 'a', firstId: 1, lastId: 4 },
      { source: 'b', firstId: 5, lastId: 7 },
      { source: 'c', firstId: 8, lastId: 10 },
    ]);
    expect(parseConfig('# source first last\n10.0.0.1 1 62000\n\n10.0.0.2 62001 124000\n')).toEqual([
      { source: '10.0.0.1', firstId: 1, lastId: 62000 },
      { source: '10.0.0.2', firstId: 62001, lastId: 124000 },
    ]);
    expect(() => parseConfig('10.0.0.1 1 10\n10.0.0.2 20\n', 'ips.conf')).toThrow("ips.conf:2: '10.0.0.2 20' is not 'sourceIP firstId lastId'");
  });

  it('splits the work under the per-worker limit, with ports continuing per source address', () => {
    const rows = [
      { source: '127.0.1.1', firstId: 1, lastId: 5 },
      { source: '127.0.1.2', firstId: 6, lastId: 8 },
      { source: '127.0.1.1', firstId: 100, lastId: 101 },
    ];
    expect(planWorkers(rows, [2000, 2010], 4)).toEqual([
      [{ source: '127.0.1.1', firstId: 1, count: 4, firstPort: 2000 }],
      [
        { source: '127.0.1.1', firstId: 5, count: 1, firstPort: 2004 },
        { source: '127.0.1.2', firstId: 6, count: 3, firstPort: 2000 },
      ],
      [{ source: '127.0.1.1', firstId: 100, count: 2, firstPort: 2005 }],
    ]);
    expect(() => planWorkers(rows, [2000, 2005], 4)).toThrow(/127\.0\.1\.1 needs 2 more local ports from 2005, past 2005/);
  });

  it('reads a worker histogram bucket as the middle of its range', () => {
    expect(bucketValue(0)).toBe(0);
    expect(bucketValue(127)).toBe(127);
    expect(bucketValue(128)).toBe(129); // 128-129 µs
    expect(bucketValue(128 + 64 * 10 + 17)).toBe((64 + 17) * 2 ** 11 + 2 ** 10); // the middle of [81, 82) x 2^11
  });
});

describe('flood worker scheduling', () => {
  /** The worker's policy from /proc/<pid>/stat (field 41: 0 SCHED_OTHER, 3 SCHED_BATCH), read once it has printed its first report. */
  async function policyOf(): Promise<number> {
    // Port 9 on loopback refuses; the worker reports every 100 ms and lives until its 5 s deadline or we kill it.
    const worker = spawn(FLOOD_WORKER, ['127.0.0.1', '9', '0', '1', '100', '5', '0', 'chunked', '0', '0', '127.0.0.1:1:1:40000'], { stdio: ['pipe', 'pipe', 'ignore'] });
    try {
      await new Promise((resolve) => worker.stdout.once('data', resolve));
      return Number(readFileSync(`/proc/${worker.pid}/stat`, 'utf8').split(') ')[1].split(' ')[41 - 3]);
    } finally {
      worker.kill();
    }
  }

  it('runs at SCHED_BATCH', async () => {
    expect(await policyOf()).toBe(3);
  });
});

describe('flood delivery timing', () => {
  /** A flood worker started by hand, with what it printed: the latest line of a kind, and every sample of a histogram (µs). */
  function watchWorker(args: string[]) {
    const worker = spawn(FLOOD_WORKER, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    const lines: string[] = [];
    createInterface({ input: worker.stdout }).on('line', (line) => lines.push(line));
    const last = (prefix: string) => lines.filter((l) => l.startsWith(prefix)).at(-1) ?? '';
    const samples = (name: string) =>
      lines
        .filter((l) => l.startsWith(`H ${name} `))
        .flatMap((l) => l.slice(4).split(' '))
        .flatMap((pair) => Array<number>(Number(pair.split(':')[1])).fill(bucketValue(Number(pair.split(':')[0]))));
    return { worker, last, samples };
  }

  it("times a delivery at its arrival in the socket, and the worker's own delay to read it apart", async () => {
    const server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0']);
    const { worker, last, samples } = watchWorker(['127.0.0.1', String(server.port), '0', '1', '50', '20', '0', 'chunked', '0', '0', '127.0.3.9:1:1:41000']);
    try {
      await until('the welcome counted', () => { expect(last('S ')).toMatch(/ welcomed=1 /); return true; }, 5000);
      // The worker stopped: the message arrives in its socket now, and is read 400 ms later.
      worker.kill('SIGSTOP');
      await api(server.apiPort, 'POST', '/send/1', `t=${epochMs().toFixed(3)} timed`);
      await until('the message in the stopped worker\'s socket', () => receiveQueue('127.0.3.9:41000') > 0);
      await sleep(400); // the read delay the worker must time, not a wait for something to happen
      worker.kill('SIGCONT');
      await until('the message counted', () => { expect(last('S ')).toMatch(/ messages=1 /); return true; }, 5000);
      // Timed at its arrival, the delivery leaves out the 400 ms it then waited to be read; timed at the read, it would not.
      expect(samples('d')).toEqual([expect.any(Number)]);
      expect(samples('l')[0] - samples('d')[0]).toBeGreaterThan(350_000);
    } finally {
      worker.kill('SIGCONT');
      worker.kill();
    }
  });

  it('with --read-every, once every stream is open, reads every N ms instead of on each arrival, and still times deliveries at arrival', async () => {
    const server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0']);
    // Reads every 1,000 ms (reports every 2,000): of three sends 150 ms apart, one waits at least 150 ms for a read.
    // One to each of three streams: chunks queued on one socket would all be timed at the last one's arrival.
    const { worker, last, samples } = watchWorker(['127.0.0.1', String(server.port), '0', '3', '2000', '20', '1000', 'chunked', '0', '0', '127.0.3.10:1:3:41001']);
    try {
      await until('three welcomes counted', () => { expect(last('S ')).toMatch(/ welcomed=3 /); return true; }, 5000);
      for (let user = 1; user <= 3; user++) {
        await api(server.apiPort, 'POST', `/send/${user}`, `t=${epochMs().toFixed(3)} polled`);
        await sleep(150);
      }
      await until('three messages counted', () => { expect(last('S ')).toMatch(/ messages=3 /); return true; }, 6000);
      expect(samples('d')).toHaveLength(3);
      // Each read comes after its arrival, one at least 150 ms after: timed at the reads, the deliveries would include it.
      const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
      expect(sum(samples('l')) - sum(samples('d'))).toBeGreaterThan(140_000);
    } finally {
      worker.kill();
    }
  });
});

describe('flood against a real server', () => {
  it('holds 2,000 streams from 4 source addresses on explicit ports, counts 3 sends exactly, matches /stats, leaves no TIME_WAIT', async () => {
    const server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0']);
    // Users 2..11 hear user 1; 12..21 hear user 2: each send reaches 11 streams.
    const pairs = [...Array.from({ length: 10 }, (_, i) => [i + 2, 1]), ...Array.from({ length: 10 }, (_, i) => [i + 12, 2])];
    await api(server.apiPort, 'POST', '/subscriptions', JSON.stringify(pairs));
    const stop = new AbortController();
    let ramped: FloodTotals | undefined;
    let reported: FloodTotals | undefined;
    const options: FloodOptions = {
      host: '127.0.0.1',
      port: server.port,
      rows: rowsFromRanges(parseSources('127.0.3.1-127.0.3.4'), [1, 2000]),
      ports: [41000, 41999],
      rate: 4000,
      concurrency: 500,
      duration: 60, // ended by `stop` once the checks below are done
      maxSeconds: 90,
      perWorker: 700, // three workers
      reportMs: 200,
      stop: stop.signal,
      onReport: (totals) => {
        reported = totals;
        ramped ??= totals.ramped ? totals : undefined;
      },
    };
    const flood = runFlood(options);
    await until('the flood to open every stream', () => ramped !== undefined, 30_000);
    expect(ramped).toMatchObject({ target: 2000, workers: 3, welcomed: 2000, open: 2000, failed: 0 });
    expect((await stats(server.apiPort)).connections).toBe(2000);
    const ends = localEnds('127.0.3.', server.port);
    expect(ends).toHaveLength(2000);
    expect(new Set(ends.map((end) => end.split(':')[0]))).toEqual(new Set(['127.0.3.1', '127.0.3.2', '127.0.3.3', '127.0.3.4']));
    expect(ends.every((end) => Number(end.split(':')[1]) >= 41000 && Number(end.split(':')[1]) < 41500)).toBe(true);

    let delivered = 0;
    for (const id of [1, 2, 1]) delivered += (await api(server.apiPort, 'POST', `/send/${id}`, `t=${Date.now()} hello from ${id}`)).json.delivered;
    expect(delivered).toBe(33);
    const serverStats = await stats(server.apiPort);
    expect(serverStats).toMatchObject({ sends: 3, chunks: 33 });
    // The workers stop at once when asked: first wait until they have reported reading all 33 chunks (histograms come first).
    await until('the workers to report 33 chunks read', () => reported!.chunks >= 33 && reported!.messages >= 33, 5000);
    stop.abort();
    const summary = await flood;

    expect(summary).toMatchObject({ target: 2000, welcomed: 2000, held: 2000, peakOpen: 2000, closed: 0, failed: 0, errors: {}, chunks: 33, messages: 33 });
    expect(summary.chunkBytes).toBe(serverStats.bytes);
    expect(summary.welcomeLatencyMs.count).toBe(2000);
    expect(summary.deliveryLatencyMs.count).toBe(33);
    expect(summary.deliveryLatencyMs.max).toBeGreaterThan(0);
    expect(summary.deliveryLatencyMs.max).toBeLessThan(5000);
    expect(summary.rss.workerBytesPerConnection).toBeGreaterThan(0);
    // Every socket closed with RST: the server saw them go, and no TIME_WAIT holds their ports.
    await until('the sockets to close', () => localEnds('127.0.3.', server.port).length === 0, 5000);
    expect((await stats(server.apiPort)).connections).toBe(0);
    expect(localEnds('127.0.3.', server.port, 'time-wait')).toEqual([]);
  });

  it('counts refused connects, and the CLI reads a config file and prints one JSON summary', async () => {
    const server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0', '--max-user-id', '150']);
    const config = join(tempDir(), 'flood.conf');
    writeFileSync(config, '# source first last\n127.0.3.5 1 100\n127.0.3.6 101 200\n');
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    let stdoutLines: string[];
    let stderrLines: string[];
    try {
      await loadgenCommand().parseAsync(['flood', '--port', String(server.port), '--config', config, '--ports', '42000-42999', '--duration', '1', '--interval', '1'], { from: 'user' });
    } finally {
      stdoutLines = log.mock.calls.map(([line]) => String(line));
      stderrLines = stderr.mock.calls.map(([line]) => String(line));
      log.mockRestore();
      stderr.mockRestore();
    }
    expect(stdoutLines).toHaveLength(1);
    // Ids above --max-user-id get 503.
    expect(JSON.parse(stdoutLines[0])).toMatchObject({ target: 200, welcomed: 150, failed: 50, errors: { http404: 50 }, held: 150 });
    expect(stderrLines.some((line) => line.startsWith('flood '))).toBe(true);

    const refused = await runFlood({ host: '127.0.0.1', port: 9, rows: [{ source: '127.0.3.7', firstId: 1, lastId: 10 }], ports: [43000, 43999], rate: 0, concurrency: 10, duration: 0, maxSeconds: 20 });
    expect(refused).toMatchObject({ welcomed: 0, failed: 10, errors: { refused: 10 } });
  });
});

describe('flood and msggen with topics (c1m run --topics)', () => {
  it.each([
    ['chunked', '127.0.3.20', 44000],
    ['ws', '127.0.3.21', 44100],
  ] as const)('over %s each stream listens to one of 3 topics (room:1 for ids 3, 6, ...), and msggen sends a share of its messages to them', async (transport, source, port) => {
    const server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0']);
    const stop = new AbortController();
    let reported: FloodTotals | undefined;
    const flood = runFlood({ host: '127.0.0.1', port: server.port, rows: [{ source, firstId: 1, lastId: 30 }], ports: [port, port + 99], rate: 0, concurrency: 30, duration: 60, maxSeconds: 60, reportMs: 200, stop: stop.signal, transport, topics: 3, onReport: (t) => (reported = t) });
    try {
      await until('the flood to open every stream', () => reported?.ramped === true, 20_000);
      expect(reported).toMatchObject({ welcomed: 30, failed: 0 });
      // Ids 3, 6, ... 30 listen to room:1; 1, 4, ... 28 to room:2.
      expect((await api(server.apiPort, 'POST', '/send/room:1', `t=${epochMs().toFixed(3)} to room 1`)).json.delivered).toBe(10);
      expect((await api(server.apiPort, 'POST', '/send/room:2', `t=${epochMs().toFixed(3)} to room 2`)).json.delivered).toBe(10);
      const summary = await runMsggen({ apiHost: '127.0.0.1', apiPort: server.apiPort, users: 30, generators: 1, interval: [10, 10], rate: 100, duration: 1, connections: 2, size: 0, topics: 3, topicShare: 0.5 });
      expect(summary.errors).toEqual({});
      expect(summary.toTopics).toBeGreaterThan(0);
      expect(summary.toTopics).toBeLessThan(summary.sent);
      // Nobody subscribes: a send to a user reaches its one stream, a send to a topic its 10 listeners.
      expect(summary.delivered).toBe(summary.sent - summary.toTopics + 10 * summary.toTopics);
      await until('the flood to read every message', () => reported!.messages >= 20 + summary.delivered, 10_000);
      stop.abort();
      expect((await flood).messages).toBe(20 + summary.delivered);
    } finally {
      stop.abort();
      await flood.catch(() => undefined);
    }
  });
});

describe('flood over several servers (edges on several hosts, bench/million-hosts.ts)', () => {
  it('gives each server the streams of every other worker, as streamsPerServer says', async () => {
    const db = () => join(tempDir(), 'c1m.db');
    const servers = [await spawnServer(['--db', db(), '--stats-interval', '0']), await spawnServer(['--db', db(), '--stats-interval', '0'])];
    const stop = new AbortController();
    let reported: FloodTotals | undefined;
    // 50 streams, 10 a worker: workers 0, 2, 4 to the first server (30), 1 and 3 to the second (20).
    const options: FloodOptions = {
      host: '127.0.0.1',
      port: 9,
      servers: servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
      rows: [{ source: '127.0.3.30', firstId: 1, lastId: 50 }],
      ports: [44600, 44699],
      perWorker: 10,
      rate: 0,
      concurrency: 50,
      duration: 60,
      maxSeconds: 60,
      reportMs: 200,
      stop: stop.signal,
      onReport: (t) => (reported = t),
    };
    expect(streamsPerServer(options)).toEqual([30, 20]);
    const flood = runFlood(options);
    try {
      await until('the flood to open every stream', () => reported?.ramped === true, 20_000);
      expect(reported).toMatchObject({ welcomed: 50, failed: 0 });
      const held = await Promise.all(servers.map(async (s) => (await api(s.apiPort, 'GET', '/stats')).json.connections));
      expect(held).toEqual([30, 20]);
    } finally {
      stop.abort();
      await flood.catch(() => undefined);
    }
  });
});

describe('msggen', () => {
  // What it achieves on a loaded box is measured, not tested: tests hold to what any slowdown keeps true.
  it('sends at its fixed rate with the token, never ahead of it, and sums what the API delivered', async () => {
    const server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0', '--token', 'sesame']);
    const client = await StreamClient.open(server.port, 1);
    const base = { apiHost: '127.0.0.1', apiPort: server.apiPort, users: 5, generators: 1, interval: [10, 110] as [number, number], connections: 4, size: 0 };
    const summary = await runMsggen({ ...base, rate: 200, duration: 3, token: 'sesame' });
    expect(summary.errors).toEqual({});
    // Open loop: it catches up to rate x elapsed, and never passes it; a box too slow for it sends fewer.
    expect(summary.sent + summary.skipped).toBeLessThanOrEqual(200 * 3);
    expect(summary.sent + summary.skipped).toBeGreaterThan(200);
    expect(summary.answered).toBe(summary.sent);
    expect(summary.achievedRate).toBeLessThanOrEqual(200);
    expect(summary.apiLatencyMs.count).toBe(summary.answered);
    const serverStats = await stats(server.apiPort, { authorization: 'Bearer sesame' });
    expect(serverStats.sends).toBe(summary.sent);
    // Only user 1 is connected and nobody subscribes: each send to 1 reaches one stream.
    await until('the messages to user 1', () => client.messages.length === summary.delivered);
    expect(summary.delivered).toBeGreaterThan(0);
    expect(client.messages.every((line) => /^t=\d+\.\d{3} msggen \d+$/.test(line))).toBe(true);
    client.close();

    const denied = await runMsggen({ ...base, rate: 20, duration: 1 });
    expect(denied.errors).toEqual({ http401: denied.sent });
  });

  it('runs G generators, each sending at most once per shortest interval, and names G / mean interval as its rate', async () => {
    const server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0']);
    const summary = await runMsggen({ apiHost: '127.0.0.1', apiPort: server.apiPort, users: 1000, generators: 20, interval: [20, 60], duration: 3, connections: 4, size: 100 });
    expect(summary.configuredRate).toBe(500);
    expect(summary.errors).toEqual({});
    expect(summary.answered).toBe(summary.sent);
    // Each generator waits at least 20 ms between sends: 3 s allow 150 each. Every one sends within its first 60 ms.
    expect(summary.sent + summary.skipped).toBeLessThanOrEqual(20 * 150);
    expect(summary.sent + summary.skipped).toBeGreaterThanOrEqual(20);
  });
});
