import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, type TestContext } from 'vitest';
import { start, type C1m, type C1mOptions } from '../index.js';
import { deliverChunks, whyNotChunks } from '../cluster/deliver-batch.js';
import type { RouterStats } from '../cluster/router-process.js';
import type { BusMessage } from '../cluster/messages.js';
import { spawnC1m, stopChild } from '../cluster/supervisor.js';
import type { Chunk } from '../router/router.js';
import type { Subject } from '../subsmanager/subjects.js';
import { spawnJetStreamServers, spawnServer as spawnServerProcess, type JetStreamServers } from '../loadgen/server-process.js';
import { numberedMessages } from '../server/stream.js';
import { until } from '../bench/until.js';

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


/**
 * A test that cannot run on this machine (`why`) is skipped, saying why. CI sets C1M_REQUIRE_FAULTS=1, and
 * there it fails instead: a test CI is meant to run never passes by not running. Called inside the test,
 * so that nothing is probed when the file is only imported.
 */
export function skipOrRequire(context: TestContext, why: string | undefined): void {
  if (why === undefined) return;
  if (process.env.C1M_REQUIRE_FAULTS === '1') throw new Error(`C1M_REQUIRE_FAULTS=1, and this test cannot run here: ${why}`);
  context.skip(why);
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'c1m-test-'));
}

/** `count` nats-servers with JetStream (spawnJetStreamServers), for the tests of the describe this is called in: call the result in a test. */
export function jetStreamServersFor(count: number): () => JetStreamServers {
  let servers: JetStreamServers | undefined;
  beforeAll(async () => {
    servers = await spawnJetStreamServers(count, tempDir());
  }, 30_000);
  afterAll(async () => {
    for (const { child } of servers?.servers.values() ?? []) await stopChild(child);
  });
  return () => servers!;
}

/** A real server on loopback with free ports and a throwaway store. */
export function startServer(options: C1mOptions = {}) {
  return start({ host: '127.0.0.1', port: 0, apiPort: 0, db: ':memory:', logger: pino({ level: 'silent' }), ...options });
}

/** An HTTP GET held open, its body read line by line as it arrives. */
abstract class LineReader {
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  ended = false;
  private buffered = '';
  private readonly req: http.ClientRequest;

  constructor(port: number, path: string, separator: string | RegExp, headers: http.OutgoingHttpHeaders = {}) {
    this.req = http.get({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      this.status = res.statusCode ?? 0;
      this.headers = res.headers;
      res.setEncoding('utf8');
      res.on('data', (text: string) => {
        const parts = (this.buffered + text).split(separator);
        this.buffered = parts.pop() ?? '';
        for (const part of parts) this.line(part);
      });
      res.on('end', () => (this.ended = true));
      res.on('error', () => (this.ended = true));
    });
    this.req.on('error', () => (this.ended = true));
  }

  protected abstract line(line: string): void;

  close(): void {
    this.req.destroy();
  }
}

/** A browser-like client holding GET /test/<id> open and collecting the lines it receives. */
export class StreamClient extends LineReader {
  readonly lines: string[] = [];

  constructor(port: number, path: string) {
    super(port, path, '\n');
  }

  protected line(line: string): void {
    this.lines.push(line);
  }

  static async open(port: number, id: number | string): Promise<StreamClient> {
    const client = new StreamClient(port, `/test/${id}`);
    await until(`welcome on /test/${id}`, () => client.lines.length > 0 || client.ended);
    return client;
  }

  /** Lines after the welcome line. */
  get messages(): string[] {
    return this.lines.slice(1);
  }

  /** The body of a refusal (not 200), as SseClient and WsClient keep it. */
  get body(): string {
    return this.status === 200 ? '' : this.lines.join('\n');
  }
}

/** An EventSource-like client of GET /sse/<id>: parses the event stream as the browser does (fields, data lines, comments). */
export class SseClient extends LineReader {
  /** Every event, the welcome first: its type, its data lines joined with '\n', and its id field if it had one. */
  readonly events: { event: string; data: string; id?: string }[] = [];
  /** Comment lines (heartbeats) seen. */
  comments = 0;
  retry?: number;
  /** The body of a refusal (not 200). */
  body = '';
  private event: { event: string; data: string[]; id?: string } = { event: 'message', data: [] };

  constructor(port: number, path: string, headers: http.OutgoingHttpHeaders = {}) {
    super(port, path, /\r\n|\r|\n/, headers);
  }

  protected line(line: string): void {
    if (this.status !== 200) return void (this.body += `${line}\n`);
    if (line === '') {
      if (this.event.data.length > 0) this.events.push({ event: this.event.event, data: this.event.data.join('\n'), ...(this.event.id !== undefined && { id: this.event.id }) });
      this.event = { event: 'message', data: [] };
      return;
    }
    if (line.startsWith(':')) return void this.comments++;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') this.event.data.push(value);
    else if (field === 'event') this.event.event = value;
    else if (field === 'retry') this.retry = Number(value);
    else if (field === 'id') this.event.id = value;
  }

  static async open(port: number, id: number | string, query = '', headers: http.OutgoingHttpHeaders = {}): Promise<SseClient> {
    const client = new SseClient(port, `/sse/${id}${query}`, headers);
    await until(`welcome on /sse/${id}`, () => client.events.length > 0 || client.ended);
    return client;
  }

  get messages(): string[] {
    return this.events.filter((e) => e.event === 'message').map((e) => e.data);
  }
}

/**
 * A WebSocket client of /ws/<id> on a plain socket: the handshake, server
 * frames (text, binary, ping, close) and masked pongs. Node 20 has no
 * WebSocket of its own; the browser's is tested in test/browser.test.ts.
 */
export class WsClient {
  /** Every frame's header line and payload, the welcome first. */
  readonly frames: { header: string; payload: string; binary: boolean }[] = [];
  status = 0;
  headers = '';
  body = '';
  closeCode?: number;
  pings = 0;
  ended = false;
  readonly socket: net.Socket;
  private buffered = Buffer.alloc(0);
  private upgraded = false;

  constructor(port: number, path: string, protocols?: string) {
    this.socket = net.connect(port, '127.0.0.1', () => {
      this.socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${protocols ? `Sec-WebSocket-Protocol: ${protocols}\r\n` : ''}\r\n`,
      );
    });
    this.socket.on('data', (data) => this.data(data));
    this.socket.on('close', () => (this.ended = true));
    this.socket.on('error', () => (this.ended = true));
  }

  private data(data: Buffer): void {
    this.buffered = Buffer.concat([this.buffered, data]);
    if (!this.upgraded) {
      const end = this.buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.headers = this.buffered.subarray(0, end).toString();
      this.status = Number(this.headers.split(' ')[1]);
      this.buffered = this.buffered.subarray(end + 4);
      if (this.status !== 101) return void (this.body = this.buffered.toString());
      this.upgraded = true;
    }
    if (this.status !== 101) return void (this.body += data.toString());
    for (;;) {
      const b = this.buffered;
      if (b.length < 2) return;
      let length = b[1] & 0x7f;
      let at = 2;
      if (length === 126) [length, at] = [b.length >= 4 ? b.readUInt16BE(2) : -1, 4];
      else if (length === 127) [length, at] = [b.length >= 10 ? Number(b.readBigUInt64BE(2)) : -1, 10];
      if (length < 0 || b.length < at + length) return;
      const opcode = b[0] & 0x0f;
      const payload = b.subarray(at, at + length);
      this.buffered = b.subarray(at + length);
      if (opcode === 0x9) {
        this.pings++;
        this.send(0xa, payload);
      } else if (opcode === 0x8) {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      } else {
        const nl = payload.indexOf(0x0a);
        this.frames.push({ header: payload.subarray(0, nl).toString(), payload: payload.subarray(nl + 1).toString(), binary: opcode === 0x2 });
      }
    }
  }

  /** A masked frame from the client, as RFC 6455 requires (payloads up to 64 KiB). */
  send(opcode: number, payload: Buffer = Buffer.alloc(0)): void {
    const mask = Buffer.from([1, 2, 3, 4]);
    const masked = payload.map((byte, i) => byte ^ mask[i % 4]);
    const length = payload.length < 126 ? [0x80 | payload.length] : [0x80 | 126, payload.length >> 8, payload.length & 0xff];
    this.socket.write(Buffer.concat([Buffer.from([0x80 | opcode, ...length]), mask, masked]));
  }

  static async open(port: number, id: number | string, query = '', protocols?: string): Promise<WsClient> {
    const client = new WsClient(port, `/ws/${id}${query}`, protocols);
    await until(`welcome on /ws/${id}`, () => client.frames.length > 0 || client.ended || (client.status !== 0 && client.status !== 101 && client.body !== ''));
    return client;
  }

  get messages(): string[] {
    return this.frames.filter((f) => f.header.split(' ')[0] === 'message').map((f) => f.payload);
  }

  close(): void {
    this.socket.destroy();
  }
}

export type Transport = 'chunked' | 'sse' | 'ws';

/** A raw socket that opens a stream of `transport` on `c1m` and then never reads a byte; resolved once the server counts it. */
export async function stalledStream(c1m: C1m, transport: Transport, id: number): Promise<net.Socket> {
  const before = c1m.stats().connections;
  const socket = net.connect(c1m.port, '127.0.0.1');
  socket.on('error', () => {});
  const path = { chunked: `/test/${id}`, sse: `/sse/${id}`, ws: `/ws/${id}` }[transport];
  const upgrade = transport === 'ws' ? 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' : '';
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${upgrade}\r\n`);
  socket.pause();
  await until('the stalled stream counted', () => c1m.stats().connections === before + 1);
  return socket;
}

/** What a client received after its welcome, as `<id> <message>` or `lost <why>`, whatever its transport's framing (ids on); heartbeats skipped. */
export function received(client: StreamClient | SseClient | WsClient): string[] {
  if ('events' in client) return client.events.slice(1).map((e) => (e.event === 'lost' ? `lost ${e.data}` : `${e.id} ${e.data}`));
  if ('frames' in client) return client.frames.slice(1).map((f) => (f.header === 'lost' ? `lost ${f.payload}` : `${f.header.replace('message id=', '')} ${f.payload}`));
  return numberedMessages(client.lines.slice(1)).filter((message) => message !== '');
}

/** A client of any transport, opened and welcomed (or refused): `messages` are what it received after the welcome. */
export async function openStream(transport: Transport, port: number, id: number | string, query = ''): Promise<StreamClient | SseClient | WsClient> {
  if (transport === 'sse') return SseClient.open(port, id, query);
  if (transport === 'ws') return WsClient.open(port, id, query);
  const client = new StreamClient(port, `/test/${id}${query}`);
  await until(`welcome on /test/${id}`, () => client.lines.length > 0 || client.ended);
  return client;
}

/**
 * One request to the backend API. node:http, not fetch: fetch refuses the ports the Fetch standard calls bad (6000,
 * 6665-6669, 10080…), which port 0 hands out once sysctl.conf has widened the local port range for the C1M run.
 */
export async function api(port: number, method: string, path: string, body?: string | Uint8Array, headers: Record<string, string> = {}) {
  const res = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    // A declared length: Node sends a DELETE's body unframed otherwise.
    const length = body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) };
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { ...length, ...headers }, agent: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
  const text = res.text;
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

/** A raw TCP client of the public or API port, for the bytes a client library would hide: what came back, and how the connection ended. */
export class RawClient {
  text = '';
  /** The socket error, e.g. ECONNRESET or EPIPE, if any. */
  error?: string;
  ended = false;
  readonly socket: net.Socket;

  constructor(port: number, request?: string | Buffer) {
    this.socket = net.connect(port, '127.0.0.1', () => request !== undefined && this.socket.write(request));
    this.socket.on('data', (data) => (this.text += data.toString('latin1')));
    this.socket.on('error', (err: NodeJS.ErrnoException) => (this.error = err.code ?? err.message));
    this.socket.on('close', () => (this.ended = true));
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits until what came back matches, or fails naming it (and what came instead). */
  async until(pattern: RegExp, what: string): Promise<RegExpExecArray> {
    await until(what, () => pattern.test(this.text) || this.ended);
    const match = pattern.exec(this.text);
    if (!match) throw new Error(`${what}: got ${JSON.stringify(this.text.slice(0, 500))}, ${this.error ?? 'closed'}`);
    return match;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Debian's headless Chromium (CHROMIUM_PATH to use another), without the background traffic this machine's closed network refuses. */
export const launchChromium = (): Promise<Browser> =>
  chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });

/** A deliver batch as lists, as an edge's delivery walk hands its chunks over: each chunk's body, targets (the topic first, where it names one), send time and id. */
export function unpackChunks(message: Extract<BusMessage, { t: 'deliver' }>) {
  const why = whyNotChunks(message.chunks, message.topics);
  if (why !== undefined) throw new Error(`not a batch: ${why}`);
  const chunks: Chunk[] = [];
  const targets: Subject[][] = [];
  const sentAt: number[] = [];
  let users: Subject[] = [];
  deliverChunks(message.chunks, message.topics, message.partition, {
    deliver: (user) => void users.push(user),
    deliverTopic: (topic, subscribers) => void (users = [topic, ...subscribers]),
    sent(chunk, at) {
      chunks.push(chunk);
      targets.push(users);
      sentAt.push(at);
      users = [];
    },
  });
  const ids = chunks.map((c) => c.id!);
  return { chunks, targets, sentAt, ids: ids.every((id) => id !== undefined) && ids.length > 0 ? ids : undefined };
}

/** One router's /stats: routers share the API port, and the kernel hands each connection to either. */
export const routerStats = async (apiPort: number) => (await api(apiPort, 'GET', '/stats')).json as RouterStats;

/** The routers' pids by the partition each leads, asking until every one of `partitions` was seen led (`distinct`: each by another router). */
export async function partitionLeaders(apiPort: number, { partitions = 2, distinct = false } = {}): Promise<Map<number, number>> {
  const led = new Map<number, number>();
  await until(
    'every partition led',
    async () => {
      const s = await routerStats(apiPort);
      for (const p of s.partitions!) if (p.leading) led.set(p.partition, s.pid);
      else if (led.get(p.partition) === s.pid) led.delete(p.partition);
      expect(led.size).toBe(partitions);
      if (distinct) expect(new Set(led.values()).size).toBe(partitions);
      return true;
    },
    30_000,
    20,
  );
  return led;
}

/** Until the directory holds exactly `n` streams in every router that answers (a standby's API is closed), asked a few times in a row. */
export const untilStreamsKnown = (apiPort: number, n: number) =>
  until(
    'the directory to hold the streams, six times in a row',
    async () => {
      for (let i = 0; i < 6; i++) expect((await routerStats(apiPort)).connections).toBe(n);
      return true;
    },
    15_000,
    50,
  );
