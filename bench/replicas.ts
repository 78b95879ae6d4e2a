/**
 * What replication costs an acknowledged send: the history in the router's
 * SQLite file, against the history on JetStream with one replica (R1) and
 * with three (R3, three clustered nats-servers). Each run is a fresh
 * `c1m cluster --routers 1 --edges 1` on loopback; closed-loop senders post to
 * random users over keep-alive connections, each waiting for its answer (the
 * answer comes once the send is committed: a local commit, or the stream's
 * acknowledgement by a quorum). Reported per run: the answer's latency p50 /
 * p99 and the router's CPU per acknowledged send (and the nats-servers' for
 * R1/R3). Modes alternate, round after round, in one sitting. A mode ending
 * in `-keys` (`sqlite-keys`, `r1-keys`, `r3-keys`) gives every send an
 * Idempotency-Key of its own: what keeping the keys costs.
 *
 *   node dist/bench/replicas.js [--sends 3000] [--concurrency 4] [--rounds 2] [--modes sqlite,r1,r3]
 */
import http from 'node:http';
import { parseArgs } from 'node:util';
import { cpuOf, spawnCluster } from '../loadgen/server-process.js';
import { stopChild } from '../cluster/supervisor.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const { values } = parseArgs({
  options: { sends: { type: 'string', default: '3000' }, concurrency: { type: 'string', default: '4' }, rounds: { type: 'string', default: '2' }, modes: { type: 'string', default: 'sqlite,r1,r3' } },
});
const sends = Number(values.sends);
const concurrency = Number(values.concurrency);
const rounds = Number(values.rounds);
const modes = values.modes.split(',');
const REPLICAS: Record<string, string[]> = { sqlite: [], r1: ['--replicas', '1'], r3: ['--replicas', '3'] };

function post(agent: http.Agent, port: number, user: number, key?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers = key === undefined ? {} : { 'idempotency-key': key };
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: `/send/${user}`, agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end('a message of forty bytes, give or take.');
  });
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

async function run(mode: string, round: number) {
  const dir = mkdtempSync(join(tmpdir(), 'c1m-replicas-'));
  const keyed = mode.endsWith('-keys');
  const cluster = await spawnCluster(['--routers', '1', '--edges', '1', '--db', join(dir, 'c1m.db'), '--state-dir', join(dir, 'state'), ...REPLICAS[mode.replace(/-keys$/, '')]]);
  try {
    const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
    // Warm up: the stream's leader elected, the connections open.
    for (let i = 0; i < 200; i++) await post(agent, cluster.apiPort, 1 + i);
    const router = cluster.pids['router-0'];
    const natsPids = Object.entries(cluster.pids).filter(([name]) => name.startsWith('nats')).map(([, pid]) => pid);
    const cpu0 = cpuOf(router);
    const nats0 = natsPids.reduce((n, pid) => n + cpuOf(pid), 0);
    const latencies: number[] = [];
    let refused = 0;
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < sends) {
          next++;
          const t = performance.now();
          const status = await post(agent, cluster.apiPort, 1 + Math.floor(Math.random() * 100_000), keyed ? `send-${round}-${next}` : undefined);
          if (status === 200) latencies.push(performance.now() - t);
          else refused++;
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const routerCpu = cpuOf(router) - cpu0;
    const natsCpu = natsPids.reduce((n, pid) => n + cpuOf(pid), 0) - nats0;
    agent.destroy();
    latencies.sort((a, b) => a - b);
    console.log(
      JSON.stringify({
        mode,
        round,
        acknowledged: latencies.length,
        refused,
        sendsPerSecond: Math.round(latencies.length / seconds),
        latencyMs: { p50: +quantile(latencies, 0.5).toFixed(2), p99: +quantile(latencies, 0.99).toFixed(2) },
        routerCpuMicrosPerSend: Math.round((routerCpu * 1e6) / latencies.length),
        natsCpuMicrosPerSend: Math.round((natsCpu * 1e6) / latencies.length),
      }),
    );
  } finally {
    await stopChild(cluster.child);
    rmSync(dir, { recursive: true, force: true });
  }
}

for (let round = 1; round <= rounds; round++) for (const mode of modes) await run(mode, round);
