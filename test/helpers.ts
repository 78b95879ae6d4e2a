import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, vi } from 'vitest';
import { start, type C1mOptions } from '../index.js';
import { spawnC1m, stopChild } from '../cluster/supervisor.js';
import { spawnServer as spawnServerProcess } from '../loadgen/server-process.js';

/** Servers started by this test file; whatever an assertion left running is killed when the file ends. */
const servers = new Set<ChildProcess>();
afterAll(() => {
  for (const child of servers) child.kill('SIGKILL');
  servers.clear();
});

export async function spawnServer(args: string[], env: NodeJS.ProcessEnv = {}) {
  const server = await spawnServerProcess(args, env);
  servers.add(server.child);
  return server;
}


export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'c1m-test-'));
}

/** A real server on loopback with free ports and a throwaway store. */
export function startServer(options: C1mOptions = {}) {
  return start({ host: '127.0.0.1', port: 0, apiPort: 0, db: ':memory:', logger: pino({ level: 'silent' }), ...options });
}

/** vi.waitFor on a condition, with a message naming what did not happen. */
export async function waitFor(check: () => boolean, what: string, ms = 5000): Promise<void> {
  await vi.waitFor(
    () => {
      if (!check()) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    },
    { timeout: ms, interval: 10 },
  );
}

/** A browser-like client holding GET /test/<id> open and collecting the lines it receives. */
export class StreamClient {
  readonly lines: string[] = [];
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  ended = false;
  private buffered = '';
  private readonly req: http.ClientRequest;

  constructor(port: number, path: string) {
    this.req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      this.status = res.statusCode ?? 0;
      this.headers = res.headers;
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        const parts = (this.buffered + text).split('\n');
        this.buffered = parts.pop() ?? '';
        this.lines.push(...parts);
      });
      res.on('end', () => (this.ended = true));
      res.on('error', () => (this.ended = true));
    });
    this.req.on('error', () => (this.ended = true));
  }

  static async open(port: number, id: number | string): Promise<StreamClient> {
    const client = new StreamClient(port, `/test/${id}`);
    await waitFor(() => client.lines.length > 0 || client.ended, `welcome on /test/${id}`);
    return client;
  }

  /** Lines after the welcome line. */
  get messages(): string[] {
    return this.lines.slice(1);
  }

  close(): void {
    this.req.destroy();
  }
}

export async function api(port: number, method: string, path: string, body?: string | Uint8Array, headers: Record<string, string> = {}) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, body, headers });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json: json as any };
}

/** Runs the c1m CLI to completion. */
export function runCli(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawnC1m(args, { env: { ...process.env, ...options.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

export { stopChild };
