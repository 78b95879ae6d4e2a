import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { haproxyConfig, haproxyConfigCommand, type HaproxyLayout } from '../cluster/haproxy.js';
import { cannotRun, runFaults } from '../loadgen/faults.js';
import { tempDir } from './helpers.js';

const haproxyInstalled = spawnSync('haproxy', ['-v']).status === 0;

const layout: HaproxyLayout = {
  bind: { host: '127.0.0.1', port: 18000 },
  stats: { host: '127.0.0.1', port: 18404 },
  edges: [
    { name: 'edge1-0', host: '10.201.0.11', port: 8100, agentPort: 9100, capacity: 500 },
    { name: 'edge2-0', host: '10.201.0.12', port: 8100, agentPort: 9100 },
  ],
  maxConnections: 4000,
};

describe('haproxy.cfg', () => {
  it.skipIf(!haproxyInstalled)('passes haproxy -c without a warning (needs Debian package haproxy)', () => {
    const file = join(tempDir(), 'haproxy.cfg');
    writeFileSync(file, haproxyConfig(layout));
    const check = spawnSync('haproxy', ['-c', '-f', file], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
    expect(check.stdout + check.stderr).not.toMatch(/WARNING|ALERT/);
  });

  it('has a server per edge with its agent and capacity, and gives a reason for every timeout', () => {
    const text = haproxyConfig(layout);
    expect(text).toContain('server edge1-0 10.201.0.11:8100 port 9100 agent-addr 10.201.0.11 agent-port 9100 maxconn 500');
    expect(text).toMatch(/server edge2-0 10\.201\.0\.12:8100 port 9100 agent-addr 10\.201\.0\.12 agent-port 9100$/m);
    expect(text).toMatch(/agent-inter 500ms/);
    expect(text).toMatch(/stats uri \/haproxy/);
    const lines = text.split('\n');
    const timeouts = lines.flatMap((line, i) => (/^\s*timeout /.test(line) ? [i] : []));
    expect(timeouts.length).toBeGreaterThanOrEqual(9);
    for (const i of timeouts) {
      // The reason is the comment just above the timeout or above the run of timeouts it belongs to.
      let j = i - 1;
      while (/^\s*(timeout|retries|option redispatch)/.test(lines[j])) j--;
      expect(lines[j], `no reason above: ${lines[i]}`).toMatch(/^\s*#/);
    }
  });

  it('refuses a layout HAProxy would refuse', () => {
    expect(() => haproxyConfig({ ...layout, edges: [] })).toThrow(/no edges/);
    expect(() => haproxyConfig({ ...layout, edges: [layout.edges[0], layout.edges[0]] })).toThrow(/twice/);
    expect(() => haproxyConfig({ ...layout, edges: [{ ...layout.edges[0], name: 'a b' }] })).toThrow(/characters/);
  });

  it('c1m haproxy-config writes it from --edge options', async () => {
    const out = join(tempDir(), 'haproxy.cfg');
    await haproxyConfigCommand().parseAsync(
      ['--edge', 'e1=10.201.0.11:8100:9100:500', '--edge', 'e2=10.201.0.12:8101:9101', '--bind', '10.201.0.1:8000', '--maxconn', '900', '--out', out],
      { from: 'user' },
    );
    const text = readFileSync(out, 'utf8');
    expect(text).toContain('bind 10.201.0.1:8000');
    expect(text).toContain('server e1 10.201.0.11:8100 port 9100 agent-addr 10.201.0.11 agent-port 9100 maxconn 500');
    expect(text).toContain('server e2 10.201.0.12:8101 port 9101 agent-addr 10.201.0.12 agent-port 9101\n');
    expect(text).toContain('maxconn 900');
  });
});

// The fast part of the fault run (loadgen/faults.ts; the whole run is in the README): real
// processes in three network namespaces, HAProxy in front, browsers that reconnect.
const why = cannotRun();
describe.skipIf(why !== undefined)(`across simulated hosts${why ? ` (skipped: ${why})` : ''}`, () => {
  it('kill -9 an edge, drain another: HAProxy routes around both, users reconnect, no message reaches another user', async () => {
    const { results, comparison } = await runFaults({ users: 60, faults: ['kill', 'drain'], sends: 200, log: () => {} });
    for (const path of comparison) expect(path.delivered, `${path.path}: every send delivered`).toBe(path.sends);
    const [kill, drain] = results;
    expect(kill).toMatchObject({ misdelivered: 0, refused: 0 });
    expect(kill.streamsOnEdge).toBeGreaterThan(0);
    // Only the killed edge's streams end, and each reconnects.
    expect(kill.ends).toBe(kill.streamsOnEdge);
    expect(kill.markedDownMs).toBeLessThan(2000);
    expect(kill.recoveryMs).toBeLessThan(5000);
    expect(drain).toMatchObject({ misdelivered: 0, refused: 0, newStreamsWhileDraining: 0 });
    expect(drain.ends).toBe(drain.streamsOnEdge);
    // Each drained stream is gone for no longer than one reconnect (100-200 ms, then the welcome).
    expect(drain.maxGapMs).toBeLessThan(1000);
    expect(drain.undrainedMs).toBeLessThan(5000);
  }, 120_000);
});
