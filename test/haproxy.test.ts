import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { haproxyConfigCommand } from '../cli/haproxy.js';
import { haproxyConfig, type HaproxyLayout } from '../cluster/haproxy.js';
import { freePorts } from '../cluster/supervisor.js';
import { spawnCluster } from '../loadgen/server-process.js';
import { cannotRun, FAULTS, haproxyServers, runFaults, runStreamFaults } from '../bench/faults.js';
import { skipOrRequire, stopChild, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

const haproxyMissing = () => (spawnSync('haproxy', ['-v']).status === 0 ? undefined : 'haproxy is not installed (Debian package haproxy)');

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
  it('passes haproxy -c without a warning (needs Debian package haproxy)', (context) => {
    skipOrRequire(context, haproxyMissing());
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

/** A free loopback port whose next one is free too: edge i of --port-per-edge serves its agent on --agent-port + i. */
async function twoFreePorts(): Promise<number> {
  const free = (port: number) =>
    new Promise<boolean>((resolve) => {
      const probe = net.createServer().once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
  for (;;) {
    const [port] = await freePorts('127.0.0.1', 1);
    if (port < 65535 && (await free(port + 1))) return port;
  }
}

describe('a killed edge behind HAProxy on loopback', () => {
  it('is marked down within the 2 s the check settings promise; the other stays up; restarted, it is back up', async (context) => {
    skipOrRequire(context, haproxyMissing());
    // What docs/hosts.md promises follows from the checks: a check every `inter`, then every `fastinter`
    // once one failed, `fall` failures mark the edge down.
    const checks = /default-server check inter (\d+)ms fastinter (\d+)ms .*fall (\d+)/.exec(haproxyConfig(layout));
    expect(checks).not.toBeNull();
    const [inter, fastinter, fall] = checks!.slice(1).map(Number);
    expect(inter + (fall - 1) * fastinter).toBeLessThanOrEqual(2000);

    const cluster = await spawnCluster(['--edges', '2', '--port-per-edge', '--agent-port', String(await twoFreePorts()), '--db', ':memory:']);
    const [bind, stats] = await freePorts('127.0.0.1', 2);
    const file = join(tempDir(), 'haproxy.cfg');
    const edges = cluster.edges.map((e) => ({ name: e.id, host: '127.0.0.1', port: e.port!, agentPort: e.agentPort!, capacity: e.capacity }));
    writeFileSync(file, haproxyConfig({ bind: { host: '127.0.0.1', port: bind }, stats: { host: '127.0.0.1', port: stats }, edges, maxConnections: 1000 }));
    const haproxy = spawn('haproxy', ['-db', '-f', file], { stdio: 'ignore' });
    const status = async (name: string) => (await haproxyServers(stats).catch(() => new Map())).get(name)?.status as string | undefined;
    try {
      const [victim, other] = cluster.edges;
      await until('HAProxy to show both edges UP', async () => { expect([await status(victim.id), await status(other.id)]).toEqual(['UP', 'UP']); return true; }, 20_000, 50);
      // The supervisor is held while the edge is down, so that a quick restart cannot answer HAProxy's checks first.
      process.kill(cluster.child.pid!, 'SIGSTOP');
      const killedAt = performance.now();
      process.kill(victim.pid, 'SIGKILL');
      try {
        await until('HAProxy to mark the killed edge DOWN', async () => { expect(await status(victim.id)).toMatch(/^DOWN/); return true; }, 10_000, 20);
        const downMs = Math.round(performance.now() - killedAt);
        console.log(`HAProxy marked the killed edge down ${downMs} ms after kill -9 (checks: inter ${inter} ms, fastinter ${fastinter} ms, fall ${fall})`);
        expect(downMs).toBeLessThan(10_000);
        expect(await status(other.id)).toBe('UP');
      } finally {
        process.kill(cluster.child.pid!, 'SIGCONT');
      }
      await until('HAProxy to show the edge UP again', async () => { expect(await status(victim.id)).toBe('UP'); return true; }, 20_000, 50);
    } finally {
      haproxy.kill('SIGKILL');
      await stopChild(cluster.child);
    }
  });
});

// The fault run (loadgen/faults.ts) at a small scale, about 30 s: real processes in three
// network namespaces (each edge host a supervised `c1m cluster --port-per-edge`), HAProxy in
// front, browsers that reconnect. It needs root and network namespaces: elsewhere it is skipped,
// saying why, and where CI sets C1M_REQUIRE_FAULTS=1 it fails instead.
describe('across simulated hosts', () => {
  it('every fault: HAProxy routes around it, users reconnect and receive again, no message reaches another user', async (context) => {
    skipOrRequire(context, cannotRun());
    const { results, comparison } = await runFaults({ users: 60, faults: FAULTS, sends: 200, rig: { capacity: 100, smallCapacity: 50 }, log: () => {} });
    expect(comparison.map((path) => path.path)).toEqual(['haproxy', 'direct']);
    for (const path of comparison) {
      expect(path.sends, `${path.path}: sends`).toBeGreaterThan(0);
      expect(path.delivered, `${path.path}: every send delivered`).toBe(path.sends);
    }
    expect(results.map((r) => r.fault)).toEqual([...FAULTS]);
    const result = Object.fromEntries(results.map((r) => [r.fault, r]));
    for (const r of results) {
      expect(r, r.fault).toMatchObject({ misdelivered: 0, refused: 0, duplicated: 0, outOfOrder: 0, lost: 0, renumbered: 0 });
      // The ledger: every acknowledged probe reached every browser that hears its subject (its user, a user it
      // follows, a topic it listens or subscribes to), through a resume where the stream went down.
      if (r.fault === 'kill' || r.fault === 'unplug') expect(r.missed, r.fault).toBe(0);
      expect(r.recoveryMs, r.fault).toBeLessThan(10_000);
    }
    const { kill, unplug, drain, router, nats, fill } = result;
    // Only the streams of the killed edge (the unplugged host) end, each reconnects, and HAProxy
    // marks the edge down within 2 s.
    expect(kill.streamsOnEdge).toBeGreaterThan(0);
    expect(kill.ends).toBe(kill.streamsOnEdge);
    // Its host's supervisor restarts it; HAProxy takes it back once the new run passes its checks.
    // Within 2 s the dead edge is marked down, or already replaced by a live one if the restart
    // answered HAProxy's second check.
    expect(kill.markedDownMs ?? kill.restartedMs).toBeLessThan(2000);
    expect(kill.restartedMs).toBeLessThan(5000);
    expect(kill.backUpMs).toBeLessThan(10_000);
    expect(unplug.streamsOnHost).toBeGreaterThan(0);
    expect(unplug.ends).toBe(unplug.streamsOnHost);
    expect(unplug.markedDownMs).toBeLessThan(2000);
    // A drained edge gets no new stream; each of its streams is gone for no longer than one
    // reconnect (100-200 ms, then the welcome); undrained, it is back in HAProxy.
    expect(drain).toMatchObject({ newStreamsWhileDraining: 0 });
    expect(drain.ends).toBe(drain.streamsOnEdge);
    expect(drain.maxGapMs).toBeLessThan(1000);
    expect(drain.undrainedMs).toBeLessThan(5000);
    // The router restarts under the streams: none ends. A nats-server restart drops the deliveries
    // published while an edge was away from it: that edge sees the gap in its batches, its streams end
    // and resume from the history, and every acknowledged probe still arrives.
    expect(router.ends).toBe(0);
    expect(nats.missed).toBe(0);
    // Filled, every edge is held at its limit and never sent a stream it refuses; the next
    // browsers wait in HAProxy's queue.
    expect(fill).toMatchObject({ everyEdgeAtLimit: true, overCapacity: 0, queued: 10, openedBeyond: 0, refusedByEdge: 0, failedAttempts: 0, connectErrors: 0, retries: 0 });
  }, 180_000);
});

// The replicated brain's engine (issue 28, step 2) across the same three hosts: every host a nats-server of one
// JetStream cluster, over TLS with one CA, routes under their own password. A router's credentials write a stream
// of R3 throughout; its leader's host dies with its disk and comes back empty.
describe('the brain hosts\' JetStream across simulated hosts', () => {
  it("keeps a stream of R3 through the loss of its leader's host with its disk: back empty, that server catches up by itself and, leading, holds every acknowledged message", async (context) => {
    skipOrRequire(context, cannotRun());
    const { host } = await runStreamFaults({ host: 'edge1', log: (line) => console.log(line) });
    // Everything in the namespace killed (its nats-server), its data directory gone before the restart.
    expect(host).toMatchObject({ fault: 'host', killed: 1, deleted: true });
    // Every message acknowledged before, during and after, once and at its own sequence: as the majority's leader
    // holds the stream, and as the server that came back empty holds it once it leads.
    expect(host).toMatchObject({ missing: 0, misnumbered: 0, returned: { missing: 0, misnumbered: 0 } });
    expect(host!.acked).toBeGreaterThan(host!.ackedBefore + host!.ackedDuring);
    expect(host!.returned.messages).toBeGreaterThan(host!.ackedBefore);
  }, 180_000);
});

// The replicated brain (issue 28) across the three hosts: a nats-server and a router on every host
// (`c1m router --replicas 3 --partitions 2`), edges on edge1 and edge2. A whole host dies with its disk
// and comes back empty, sends going on throughout.
describe('the replicated brain across simulated hosts', () => {
  it('a whole host lost with its disk and back empty: nothing acknowledged missed or doubled, every router holds every subscription, the host serves again', async (context) => {
    skipOrRequire(context, cannotRun());
    const { results } = await runFaults({ users: 60, faults: ['host'], sends: 0, rig: { capacity: 100, smallCapacity: 50, replicas: 3, partitions: 2 }, log: (line) => console.log(line) });
    const [host] = results;
    expect(host).toMatchObject({ fault: 'host', killed: 5, misdelivered: 0, missed: 0, duplicated: 0, outOfOrder: 0, renumbered: 0, subscriptionsLost: { brain: 0, edge1: 0, edge2: 0 } });
    expect(['serves', 'stands by']).toContain(host.state);
    // Reported, not asserted: the 3 s cannot hold while nats-server 2.9.10 elects a lost stream leader (docs/hosts.md, "The fault run").
    console.log(`host fault: the longest wait for an acknowledged send ${host.maxSendGapMs} ms; ${host.retriedAcks} probes acknowledged on a keyed retry (${host.keptUnanswered} of them kept on an unanswered try)`);
  }, 180_000);
});
