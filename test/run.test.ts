import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CHARTS } from '../loadgen/report.js';
import { runCommand } from '../cli/run.js';
import { runC1m } from '../loadgen/run.js';
import type { RunOptions, Sample } from '../loadgen/run-result.js';
import { cannotRun } from '../bench/faults.js';
import { runOnSimulatedHosts } from '../bench/million-hosts.js';
import { skipOrRequire, tempDir } from './helpers.js';

/** Command lines of the processes alive now that mention `text`. */
function processesMentioning(text: string): string[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)
    .flatMap((pid) => {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
        return cmdline.includes(text) ? [`${pid}: ${cmdline}`] : [];
      } catch {
        return [];
      }
    });
}

const small = (dir: string, more: Partial<RunOptions> = {}): RunOptions => ({
  connections: 2000,
  users: 2000,
  m: 3,
  seed: 1,
  db: join(dir, 'friends.db'),
  edges: 2,
  historySeconds: 120,
  historyPerSubject: 1000,
  src: '127.0.40.1-127.0.40.4',
  ports: [20000, 29999],
  rate: 2000,
  concurrency: 500,
  readEveryMs: 10,
  hold: 3,
  msgSeconds: 3,
  warmup: 2,
  msgRates: [200, 500],
  generators: 10,
  sendInterval: [10, 110],
  msgConnections: 4,
  out: join(dir, 'report'),
  maxSeconds: 50,
  log: () => {},
  ...more,
});

describe('c1m run', () => {
  it('loads the graph, holds 2,000 streams on 2 edges (each listening to a topic), steps two send rates, stops everything and writes a complete report', async () => {
    const dir = tempDir();
    const result = await runC1m(small(dir, { topics: 100, topicShare: 0.1 }));
    expect(result.error).toBeUndefined();
    expect(result.status).toBe('complete');
    expect(result.graph).toMatchObject({ loaded: true, rows: 2 * (6 + (2000 - 4) * 3) });
    expect(result.cluster).toMatchObject({ edges: 2, restarts: 0 });
    expect(result.flood).toMatchObject({ target: 2000, peakOpen: 2000, welcomed: 2000, failed: 0, closed: 0, held: 2000 });

    const peak = result.snapshots.peak!;
    expect(peak).toMatchObject({ phase: 'hold', open: 2000, serverStreams: 2000, processes: { edges: 2, router: 1, nats: 1, supervisor: 1, runner: 1 } });
    expect(peak.processes.floodWorkers).toBeGreaterThanOrEqual(1);
    for (const role of ['edges', 'router', 'nats', 'supervisor', 'floodWorkers', 'runner'] as const) {
      expect(peak.rss[role], role).toBeGreaterThan(0);
      expect(peak.pss[role], role).toBeGreaterThan(0);
      expect(peak.pss[role], role).toBeLessThanOrEqual(peak.rss[role]);
    }
    expect(peak.kernel.tcpInUse).toBeGreaterThanOrEqual(4000);

    expect(result.steps.map((s) => s.rate)).toEqual([200, 500]);
    // Every send of the run is kept (2 s warm-up and 2 x 3 s of sends, well inside 120 s): its size is reported.
    const sent = result.steps.reduce((n, s) => n + s.msggen.sent, 0);
    expect(result.history!.messages).toBeGreaterThan(sent);
    expect(result.history!.bytes).toBeGreaterThan(result.history!.messages * 20);
    // The rates achieved are the report's figures; the sender never runs ahead of the rate asked, and each send reaches a stream.
    for (const step of result.steps) {
      expect(step.msggen.sent).toBeGreaterThan(0);
      // A tenth of the sends to the topics the streams listen to (20 each): all delivered.
      expect(step.msggen.toTopics).toBeGreaterThan(0);
      expect(step.msggen.toTopics).toBeLessThan(step.msggen.sent / 2);
      expect(step.msggen.sent + step.msggen.skipped).toBeLessThanOrEqual(step.rate * result.options.msgSeconds);
      expect(step.deliveredChunksPerSecond).toBeGreaterThan(step.msggen.achievedRate);
      expect(step.delivery.count).toBeGreaterThan(0);
    }

    // Nothing it started is left: supervisor and router (--db), edges (--nats URL), nats-server (its port).
    const natsPort = new URL(result.cluster!.nats).port;
    expect([...processesMentioning(result.options.db), ...processesMentioning(result.cluster!.nats), ...processesMentioning(`-p ${natsPort}`)]).toEqual([]);
    expect(readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim()).toBe('');

    const report = readFileSync(join(result.dir, 'report.md'), 'utf8');
    for (const text of [
      'Status: **complete**',
      'each also listening to one of 100 topics (10 % of the sends to a random one of them)',
      `History: every message kept 120 s (at most 1,000 per sender); after the run ${result.history!.messages.toLocaleString('en-US')} messages in `,
      '| streams reached (most open at once, client side) | 2,000 |',
      "| streams in the router's directory at the end of the hold | 2,000 |",
      '| closed by the server (unexpected) | 0 |',
      'RSS per stream** (',
      'PSS per stream',
      '| **c1m cluster (all server processes)** | 5 |',
      '| nats-server | 1 |',
      '| **load generator** |',
      '| SUnreclaim |',
      '| TCP mem (/proc/net/sockstat, pages x 4 KiB) |',
      '| **machine (all processes and the kernel)** |',
      'µs of CPU per connect',
      '| welcome latency p50 / p99 / p99.9 / max |',
      '| 200 | ',
      '| 500 | ',
      'Delivery latency over the whole run',
      'the 2 s warm-up at 200 sends/s included',
      'after a 2 s warm-up at the first rate (not measured',
      '| process | ramp (',
      ' | warm-up (',
    ])
      expect(report).toContain(text);
    // Each step's machine cores and CPU per delivered chunk, as the floor's steps give them.
    for (const rate of ['200', '500']) expect(report).toMatch(new RegExp(`\\| ${rate} \\| [^\\n]* \\| \\d+\\.\\d\\d \\| \\d+\\.\\d\\d \\| \\d+\\.\\d µs \\| `));
    expect(report).toMatch(/\*\*(Highest send rate sustained at p99 <= 100 ms: [\d,]+ sends\/s, of which [\d,]+ to users, [\d,]+ delivered chunks\/s|No rate tried was sustained)/);

    const samples = JSON.parse(readFileSync(join(result.dir, 'samples.json'), 'utf8')) as Sample[];
    expect(samples.length).toBeGreaterThanOrEqual(10);
    expect(new Set(samples.map((s) => s.phase))).toEqual(new Set(['start', 'ramp', 'hold', 'warm-up', 'messages', 'stop']));
    expect(Math.max(...samples.map((s) => s.open))).toBe(2000);
    expect(samples.some((s) => s.delivery.count > 0 && s.chunksPerSecond > 0 && s.sendsPerSecond > 0)).toBe(true);
    expect(samples.every((s) => s.kernel.slabBytes > 0 && s.rss.runner > 0)).toBe(true);
    expect(JSON.parse(readFileSync(join(result.dir, 'summary.json'), 'utf8'))).toMatchObject({ status: 'complete', flood: { peakOpen: 2000 } });

    for (const chart of CHARTS) {
      const svg = readFileSync(join(result.dir, `${chart}.svg`), 'utf8');
      expect(svg, chart).toMatch(/^<svg[\s\S]*<\/svg>$/);
      expect(report).toContain(`![${chart}](${chart}.svg)`);
      // Lines through many points: real data, not an empty frame.
      const longest = Math.max(0, ...[...svg.matchAll(/aria-roledescription="line mark" d="([^"]+)"/g)].map((m) => (m[1].match(/L/g) ?? []).length));
      expect(longest, chart).toBeGreaterThanOrEqual(chart === 'latency' ? 2 : 8);
    }
    expect(readFileSync(join(result.dir, 'memory.svg'), 'utf8')).toContain('edges PSS');
  });

  it('--routers 2 --partitions 2 --replicas 3: publishes the graph to the store\'s stream, every router\'s view holds it, and the run goes on as with one router', async () => {
    const dir = tempDir();
    const lines: string[] = [];
    const result = await runC1m(small(dir, { connections: 1000, users: 1000, src: '127.0.42.1-127.0.42.2', msgRates: [200], routers: 2, partitions: 2, replicas: 3, maxSeconds: 120, log: (line) => lines.push(line) }));
    expect(result.error, lines.join('\n')).toBeUndefined();
    expect(result.status).toBe('complete');
    expect(result.graph).toMatchObject({ loaded: true, rows: 2 * (6 + (1000 - 4) * 3) });
    expect(lines).toContain(`graph: every router's view holds it (${2 * (6 + (1000 - 4) * 3)} subscriptions)`);
    // Not into --db: the views are the run's own.
    expect(existsSync(result.options.db)).toBe(false);
    expect(result.snapshots.peak).toMatchObject({ open: 1000, serverStreams: 1000, processes: { edges: 2, router: 2, nats: 3 } });
    const [step] = result.steps;
    expect(step.msggen.sent).toBeGreaterThan(0);
    expect(step.deliveredChunksPerSecond).toBeGreaterThan(step.msggen.achievedRate);
    const report = readFileSync(join(result.dir, 'report.md'), 'utf8');
    expect(report).toContain("in the store's stream on JetStream (R3)");
    expect(report).toContain('2 routers sharing 2 partitions, 3 clustered nats-servers with JetStream (the brain at R3)');
    // Nothing left: every process, and the views and JetStream stores of the run.
    expect(processesMentioning(result.cluster!.nats.split(',')[0])).toEqual([]);
    expect(readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim()).toBe('');
  }, 150_000);

  it('across the three simulated hosts (bench/million-hosts.ts): the streams spread over both edge hosts straight from the bridge, every one held, the sends delivered by the replicated brain on all three hosts', async (context) => {
    skipOrRequire(context, cannotRun());
    const dir = tempDir();
    const lines: string[] = [];
    const result = await runOnSimulatedHosts(small(dir, { connections: 3000, users: 3000, src: '127.0.43.1-127.0.43.2', msgRates: [200], maxSeconds: 150, log: (line) => lines.push(line) }));
    expect(result.error, lines.join('\n')).toBeUndefined();
    expect(result.status).toBe('complete');
    expect(lines).toContain(`graph: every router's view holds it (${2 * (6 + (3000 - 4) * 3)} subscriptions)`);
    expect(lines.find((line) => line.startsWith('cluster:'))).toMatch(/streams at 10\.201\.0\.11:8000, 10\.201\.0\.12:8000, API on 10\.201\.0\.\d+:8001/);
    // Every stream held, each edge host holding its share; the routers and nats-servers of all three hosts sampled.
    expect(result.flood).toMatchObject({ held: 3000, failed: 0 });
    expect(result.snapshots.peak).toMatchObject({ open: 3000, serverStreams: 3000, processes: { router: 3, nats: 3, supervisor: 2 } });
    expect(result.snapshots.peak!.processes.edges).toBeGreaterThanOrEqual(2);
    const [step] = result.steps;
    expect(step.msggen.errors).toEqual({});
    expect(step.deliveredChunksPerSecond).toBeGreaterThan(step.msggen.achievedRate);
    expect(readFileSync(join(result.dir, 'report.md'), 'utf8')).toContain('3 routers sharing 2 partitions, 3 clustered nats-servers with JetStream (the brain at R3)');
    expect(readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim()).toBe('');
  }, 240_000);

  it('refuses a store holding another graph, and too few source addresses, before starting anything', async () => {
    const dir = tempDir();
    const { openStore } = await import('../subsmanager/store.js');
    const store = openStore(join(dir, 'friends.db'));
    store.addSubscriptions([[1, 2]]);
    store.close();
    const result = await runC1m(small(dir));
    expect(result.status).toBe('failed');
    expect(result.error).toMatch(/holds 1 subscriptions, not the 2000 x m=3 graph/);
    expect(result.cluster).toBeUndefined();
    expect(readFileSync(join(result.dir, 'report.md'), 'utf8')).toContain('Status: **failed**');
    await expect(runC1m(small(dir, { connections: 200_000, src: '127.0.40.1-127.0.40.2' }))).rejects.toThrow(/need at least 20 source addresses at 10000 ports each; --src gives 2/);
  });

  it('stops every process it started when interrupted, and still writes the report', async () => {
    const dir = tempDir();
    const stop = new AbortController();
    let abortedAt = 0;
    const result = await runC1m(
      small(dir, {
        connections: 300,
        users: 300,
        src: '127.0.41.1-127.0.41.2',
        hold: 60,
        signal: stop.signal,
        log: (line) => {
          if (!line.startsWith('hold') || stop.signal.aborted) return;
          abortedAt = performance.now();
          stop.abort();
        },
      }),
    );
    expect(result.status).toBe('interrupted');
    expect(result.flood).toMatchObject({ welcomed: 300, closed: 0, held: 300 });
    // It stopped at the interruption, not at the end of its 60 s hold.
    expect(performance.now() - abortedAt).toBeLessThan(30_000);
    const natsPort = new URL(result.cluster!.nats).port;
    expect([...processesMentioning(result.options.db), ...processesMentioning(result.cluster!.nats), ...processesMentioning(`-p ${natsPort}`)]).toEqual([]);
    expect(readFileSync(join(result.dir, 'report.md'), 'utf8')).toContain('Status: **interrupted**');
  });

  it('c1m run refuses bad options before starting anything', () => {
    const parse = (...args: string[]) => () => runCommand().exitOverride().configureOutput({ writeErr: () => {} }).parse(args, { from: 'user' });
    expect(runCommand().helpInformation()).toMatch(/--msg-rates <list>[\s\S]*--max-seconds <s>/);
    expect(parse('--msg-rates', '1000,x')).toThrow(/msg rate must be an integer >= 1/);
    expect(parse('--msg-rate', '100', '--msg-rates', '100,200')).toThrow(/cannot be used with/);
    expect(parse('--ports', '9-1')).toThrow(/ports '9-1' is not N or N-M/);
    expect(parse('--topic-share', '1.5')).toThrow(/a share is a number from 0 to 1, not '1.5'/);
    expect(parse('--topics', '-1')).toThrow(/topics must be an integer >= 0/);
  });
});
