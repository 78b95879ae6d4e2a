import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The built CLI: one folder up in dist/, or in dist/ when this module runs from source (under vitest). */
export const CLI = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../dist/cli.js' : '../cli.js', import.meta.url));

export interface ServerProcess {
  child: ChildProcess;
  port: number;
  apiPort: number;
  /** Everything the process printed so far, stdout and stderr. */
  output(): string;
}

/**
 * Starts `c1m server` on loopback with free ports as a child process (extra
 * flags in `args`) and resolves once it logs that it is listening. A server
 * that has not said so within `timeoutMs` is killed, never left behind.
 */
export function spawnServer(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<ServerProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'server', '--host', '127.0.0.1', '--port', '0', '--api-port', '0', ...args], {
      env: { ...process.env, ...env },
    });
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`c1m server did not start listening within ${timeoutMs} ms: ${out}`));
    }, timeoutMs);
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.includes('c1m listening'));
      if (line) {
        clearTimeout(timer);
        const { port, apiPort } = JSON.parse(line);
        resolve({ child, port, apiPort, output: () => out });
      }
    });
    child.stderr.on('data', (d) => (out += d));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`c1m server exited with ${code}: ${out}`));
    });
  });
}

/** Whether a process with this pid exists: signal 0 sends nothing; EPERM means it exists but is not ours. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
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
  edges: { id: string; pid: number; agentPort?: number; capacity: number }[];
  pids: Record<string, number>;
  output(): string;
}

/**
 * Starts `c1m cluster` on loopback (extra flags in `args`) and resolves with
 * its ports, NATS URL and child pids once it logs that it is ready. Killed,
 * never left behind, if it does not get ready within `timeoutMs`.
 */
export function spawnCluster(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<ClusterProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'cluster', '--host', '127.0.0.1', '--port', '0', '--api-port', '0', '--nats-port', '0', ...args], {
      env: { ...process.env, ...env },
    });
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`c1m cluster did not get ready within ${timeoutMs} ms: ${out.slice(-4000)}`));
    }, timeoutMs);
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.includes('c1m cluster ready'));
      if (line) {
        clearTimeout(timer);
        child.stdout.removeAllListeners('data');
        child.stdout.on('data', (more) => (out += more));
        resolve({ child, ...JSON.parse(line), output: () => out });
      }
    });
    child.stderr.on('data', (d) => (out += d));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`c1m cluster exited with ${code}: ${out.slice(-4000)}`));
    });
  });
}
