import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { credsFile, writeNatsConfig } from '../cluster/nats-auth.js';
import { errorCode } from '../subsmanager/errors.js';
import { freePorts, spawnC1m } from '../cluster/supervisor.js';

export interface ServerProcess {
  child: ChildProcess;
  port: number;
  apiPort: number;
  /** Everything the process printed so far, stdout and stderr. */
  output(): string;
}

/**
 * Runs `c1m <command>` on loopback with free ports (extra flags in `args`) and
 * resolves with the child and its ready line's JSON once it logs `ready`. A
 * child that has not said so within `timeoutMs` is killed, never left behind.
 */
function spawnReady(command: string[], ready: string, env: NodeJS.ProcessEnv, timeoutMs: number, cli?: string) {
  return new Promise<{ child: ChildProcess; info: Record<string, unknown>; output: () => string }>((resolve, reject) => {
    const child = spawnC1m(command, { env: { ...process.env, ...env } }, cli);
    let out = '';
    const output = () => out;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`c1m ${command[0]} did not get ready within ${timeoutMs} ms: ${out.slice(-4000)}`));
    }, timeoutMs);
    const onData = (d: Buffer) => {
      out += d;
      const line = out.split('\n').find((l) => l.includes(ready));
      if (!line) return;
      clearTimeout(timer);
      child.stdout!.off('data', onData).on('data', (more) => (out += more));
      resolve({ child, info: JSON.parse(line), output });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d) => (out += d));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`c1m ${command[0]} exited with ${code}: ${out.slice(-4000)}`));
    });
  });
}

/** Starts `c1m server` on loopback with free ports; resolves once it is listening. */
export async function spawnServer(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<ServerProcess> {
  const { child, info, output } = await spawnReady(['server', '--host', '127.0.0.1', '--port', '0', '--api-port', '0', ...args], 'c1m listening', env, timeoutMs);
  return { child, port: info.port as number, apiPort: info.apiPort as number, output };
}

/** Starts a lone `c1m edge` on loopback with a free port (its NATS server and id in `args`); resolves once it is listening. */
export async function spawnEdge(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<Omit<ServerProcess, 'apiPort'>> {
  const { child, info, output } = await spawnReady(['edge', '--host', '127.0.0.1', '--port', '0', ...args], 'c1m edge listening', env, timeoutMs);
  return { child, port: info.port as number, output };
}

/**
 * Starts a lone `c1m router` with its API on a free loopback port (its NATS server, store and the rest in `args`);
 * resolves once it is listening. `cli`: another build's c1m (a benchmark's before).
 */
export async function spawnRouter(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000, cli?: string): Promise<Omit<ServerProcess, 'port'>> {
  const { child, info, output } = await spawnReady(['router', '--api-host', '127.0.0.1', '--api-port', '0', ...args], 'c1m router listening', env, timeoutMs, cli);
  return { child, apiPort: info.apiPort as number, output };
}

/**
 * Starts Debian's `nats-server` on host:port (extra flags in `args`) and
 * resolves once it accepts connections. One that exits first, or is not
 * accepting within `timeoutMs`, is an error and is never left behind.
 */
export async function spawnNatsServer(host: string, port: number, args: string[] = [], timeoutMs = 10_000): Promise<ChildProcess> {
  const child = spawn('nats-server', ['-a', host, '-p', String(port), ...args], { stdio: 'ignore' });
  const exited = new Promise<never>((_, reject) => child.once('error', reject).once('exit', (code) => reject(new Error(`nats-server exited with ${code}`))));
  const accepting = () =>
    new Promise<boolean>((resolve) => {
      const socket = net.connect(port, host, () => (socket.destroy(), resolve(true))).once('error', () => resolve(false));
    });
  const deadline = performance.now() + timeoutMs;
  try {
    while (!(await Promise.race([accepting(), exited]))) {
      if (performance.now() > deadline) throw new Error(`nats-server on ${host}:${port} did not accept connections within ${timeoutMs} ms`);
      await sleep(50);
    }
    return child;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}

export interface JetStreamServers {
  /** Their client URLs, comma-separated (as --nats takes them). */
  urls: string;
  /** The routers' credentials file (the only role that reaches JetStream). */
  creds: string;
  replicas: number;
  /** Each server by name (js-0, js-1, ...): its process, its store directory, and how to start it again (spawnNatsServer(host, port, args)). */
  servers: Map<string, { child: ChildProcess; storeDir: string; port: number; args: string[] }>;
}

/**
 * `count` nats-servers on loopback with JetStream, clustered when more than one, with c1m's users and their
 * permissions, as `c1m nats-config --jetstream` writes them (configuration and credentials in `dir`).
 */
export async function spawnJetStreamServers(count: number, dir: string, host = '127.0.0.1'): Promise<JetStreamServers> {
  const ports = await freePorts(host, 2 * count);
  const [client, cluster] = [ports.slice(0, count), ports.slice(count)];
  const at = (port: number) => `${host}:${port}`;
  const names = client.map((_, i) => `js-${i}`);
  const stores = names.map((name) => join(dir, name));
  const configs = names.map((name, i) =>
    writeNatsConfig(dir, {
      listen: at(client[i]),
      edges: [],
      jetstream: { name, storeDir: stores[i], ...(count > 1 && { cluster: { listen: at(cluster[i]), routes: cluster.filter((_, k) => k !== i).map(at) } }) },
    }),
  );
  const children = await Promise.all(client.map((port, i) => spawnNatsServer(host, port, ['-c', configs[i]])));
  return {
    urls: client.map((port) => `nats://${at(port)}`).join(','),
    creds: credsFile(dir, 'router'),
    replicas: count,
    servers: new Map(names.map((name, i) => [name, { child: children[i], storeDir: stores[i], port: client[i], args: ['-c', configs[i]] }])),
  };
}

/** Whether a process with this pid exists: signal 0 sends nothing; EPERM means it exists but is not ours. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errorCode(err) === 'EPERM';
  }
}

/** Resident set size of a process, in bytes (Linux). */
export function rssOf(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
}

/**
 * Proportional set size, in bytes: RSS with each shared page divided among the
 * processes that map it. Edges share Node's code pages, so the sum of their
 * PSS, unlike the sum of their RSS, is what they really cost together.
 */
export function pssOf(pid: number): number {
  return Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) * 1024;
}

/** Children of a process (Linux: the pid's main thread forks them, as Node's spawn does). */
export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export const commOf = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
};

/** The c1m command a process runs (`router`, `edge`…: the argument after the CLI's script), or '' for another process. */
export const c1mCommandOf = (pid: number) => {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const script = argv.findIndex((arg) => arg.endsWith('/c1m.js'));
    return script < 0 ? '' : (argv[script + 1] ?? '');
  } catch {
    return '';
  }
};

/** /proc/stat's first line: jiffies busy, user (+nice), system, softirq, and in all. */
export function machineTicks() {
  const [user, nice, system, idle, iowait, irq, softirq, steal] = readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  const total = user + nice + system + idle + iowait + irq + softirq + steal;
  return { total, busy: total - idle - iowait, user: user + nice, system: system + irq, softirq };
}

/** Cores the machine spent between two machineTicks() readings: busy in all, and its user, system and softirq parts. */
export function machineCores(before: MachineTicks, after: MachineTicks): Record<'busy' | 'user' | 'system' | 'softirq', number> {
  const share = (key: keyof MachineTicks) => +(((after[key] - before[key]) / Math.max(1, after.total - before.total)) * cpus().length).toFixed(3);
  return { busy: share('busy'), user: share('user'), system: share('system'), softirq: share('softirq') };
}
export type MachineTicks = ReturnType<typeof machineTicks>;

/** CPU seconds a process has spent in user space and in the kernel. */
export function cpuSplitOf(pid: number): { user: number; system: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuOf(pid: number): number {
  const { user, system } = cpuSplitOf(pid);
  return user + system;
}

export interface ClusterProcess {
  child: ChildProcess;
  port: number;
  apiPort: number;
  nats: string;
  /** The started nats-server's configuration and every role's credentials (c1m nats-config's layout). */
  natsDir: string;
  /** `port` only with --port-per-edge: each edge's own. */
  edges: { id: string; pid: number; port?: number; agentPort?: number; capacity: number }[];
  pids: Record<string, number>;
  output(): string;
}

/** Starts `c1m cluster` on loopback with free ports; resolves with its ports, NATS URL and child pids once it is ready. */
export async function spawnCluster(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<ClusterProcess> {
  const command = ['cluster', '--host', '127.0.0.1', '--port', '0', '--api-port', '0', '--nats-port', '0', ...args];
  const { child, info, output } = await spawnReady(command, 'c1m cluster ready', env, timeoutMs);
  return { ...(info as Omit<ClusterProcess, 'child' | 'output'>), child, output };
}
