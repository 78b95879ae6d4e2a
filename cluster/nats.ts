/**
 * A minimal NATS client: exactly what Bus needs (publish, subscribe, request,
 * reconnect), speaking the text protocol of docs.nats.io "Client Protocol"
 * straight over a socket. The official client's stream and promise machinery
 * cost the edges more CPU than the work they do per message, and memory in
 * every one of dozens of processes. What a production client must do, it
 * does: NKey authentication, TLS (verified, failing closed), max_payload,
 * the servers a cluster announces (connect_urls), reconnection with jitter,
 * lame duck mode, and errors that retrying cannot cure reported as such.
 * As in nats.js, the server list, the heartbeats and the request mux are
 * units of their own (./nats-servers.ts, ./nats-heartbeat.ts,
 * ./nats-requests.ts); this file holds the protocol and the connection.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { Heartbeat } from './nats-heartbeat.js';
import { RequestMux } from './nats-requests.js';
import { serverName, Servers, type Server } from './nats-servers.js';
import type { NKeyUser } from './nkeys.js';

/** `subject` and `status` (of a header "NATS/1.0 503") matter only to the requests' inbox. */
export type MessageCallback = (data: Uint8Array, reply: string | undefined, subject: string, status: string | undefined) => void;

export interface NatsOptions {
  name: string;
  /** Retry the first connection and every lost one (cluster processes); otherwise fail, or close, at once. */
  persistent: boolean;
  /** Who we are: signs the server's nonce. */
  user?: NKeyUser;
  /** PEM of the certificate authorities a TLS server's certificate must chain to (default: the system's). */
  ca?: string | Buffer;
  /**
   * A persistent client met an error that retrying cannot cure (credentials refused, a certificate
   * that does not verify, a server without TLS for a tls:// URL): it has closed itself.
   */
  fatal?: (err: NatsFatalError) => void;
  /** Each reconnection, once its handshake is done: messages may have been missed meanwhile. */
  reconnected?: () => void;
  /** Trouble worth a log line: -ERR from the server, a dead connection, publishes dropped during an outage. */
  warning?: (message: string) => void;
  pingIntervalMs?: number;
  /** The subject prefix of this client's inboxes (default `_INBOX`): an edge's is its own, so that permissions can keep other processes' replies from it. */
  inboxPrefix?: string;
}

/** The fields of the server's INFO that the client uses. */
export interface ServerInfo {
  max_payload?: number;
  /** Present when the server wants a signed nonce (NKeys). */
  nonce?: string;
  auth_required?: boolean;
  tls_required?: boolean;
  tls_available?: boolean;
  /** The other servers of its cluster, host:port. */
  connect_urls?: string[];
  /** Lame duck mode: the server is about to shut down and asks its clients to move. */
  ldm?: boolean;
}

export interface ParserHandler {
  message(sid: number, subject: string, reply: string | undefined, data: Uint8Array, status: string | undefined): void;
  info(info: ServerInfo): void;
  ping(): void;
  pong(): void;
  error(message: string): void;
}

/**
 * Reconnection waits are drawn at random ("full jitter") between 0 and a bound that doubles with
 * each failed attempt from RECONNECT_BASE_MS up to RECONNECT_MAX_MS, so that the processes of a
 * cluster do not all reconnect to a restarted server in the same millisecond.
 */
const RECONNECT_BASE_MS = 100;
const RECONNECT_MAX_MS = 2000;
/** A server in lame duck mode is left after a random wait below this, so its clients leave it spread out. */
const LAME_DUCK_JITTER_MS = 1000;
/** Every connection of this process reads into this one buffer (reads are synchronous callbacks; see handshake). */
const readBuffer = Buffer.allocUnsafe(64 * 1024);
const HANDSHAKE_TIMEOUT_MS = 5000;
const CLOSE_TIMEOUT_MS = 2000;
/** Publishes kept for after an outage; beyond this they are dropped (core NATS is at-most-once anyway). */
const OUTAGE_BUFFER_BYTES = 8 * 2 ** 20;
const CRLF = Buffer.from('\r\n');

/** An error that retrying cannot cure: bad credentials, a certificate that does not verify, TLS wanted but not offered. */
export class NatsFatalError extends Error {}

/** Errors of a TLS handshake that mean "this certificate is not the one we trust", as opposed to a broken connection. */
const CERTIFICATE_ERROR = /CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|SIGNATURE|ISSUER/;

const LF = 10;

/**
 * Reads the server's side of the protocol from TCP chunks split anywhere.
 * Payloads are views of the received chunk, copied only when a message spans chunks.
 */
export class Parser {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes a message whose payload has not all arrived needs, counted from its control line. */
  private needed = 0;

  constructor(private readonly on: ParserHandler) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered < this.needed) return;
    const buf = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    this.needed = 0;
    let pos = 0;
    for (let eol; pos < buf.length && (eol = buf.indexOf(LF, pos)) >= 0; ) {
      const next = buf[pos] === 77 ? this.msg(buf, pos, eol) : this.line(buf, buf.toString('latin1', pos, eol - 1), eol + 1);
      if (next < 0) {
        this.needed = eol + 1 - pos - next;
        break;
      }
      pos = next;
    }
    if (pos < buf.length) {
      this.chunks.push(buf.subarray(pos));
      this.buffered = buf.length - pos;
    }
  }

  /**
   * MSG <subject> <sid> [reply-to] <#bytes>, read from the line's bytes, with no string of the line and no split of
   * it: every bus message comes as one. Returns as line() does.
   */
  private msg(buf: Buffer, from: number, eol: number): number {
    const end = eol - 1; // the line's \r
    const subjectEnd = buf.indexOf(32, from + 4);
    if (subjectEnd < 0 || subjectEnd >= end) throw new Error(`unexpected protocol line: ${buf.toString('latin1', from, Math.min(end, from + 80))}`);
    let at = subjectEnd + 1;
    const sidAt = at;
    while (at < end && buf[at] !== 32) at++;
    const sid = digits(buf, sidAt, at);
    let sizeAt = end;
    while (sizeAt > at && buf[sizeAt - 1] !== 32) sizeAt--;
    const total = digits(buf, sizeAt, end);
    const start = eol + 1;
    const stop = start + total;
    if (stop + 2 > buf.length) return -(total + 2);
    const reply = sizeAt - 1 > at ? buf.toString('latin1', at + 1, sizeAt - 1) : undefined;
    this.on.message(sid, buf.toString('latin1', from + 4, subjectEnd), reply, buf.subarray(start, stop), undefined);
    return stop + 2;
  }

  /** Handles one control line; returns where the next one starts, or minus the payload bytes still missing. */
  private line(buf: Buffer, line: string, start: number): number {
    switch (line.charCodeAt(0)) {
      case 72: {
        // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
        const args = line.split(' ');
        const total = Number(args[args.length - 1]);
        const end = start + total;
        if (end + 2 > buf.length) return -(total + 2);
        const headerBytes = Number(args[args.length - 2]);
        // The status is the code on the headers' first line: "NATS/1.0 503".
        const status = buf.toString('latin1', start + 9, Math.min(start + 12, buf.indexOf(13, start))) || undefined;
        this.on.message(Number(args[2]), args[1], args.length > 5 ? args[3] : undefined, buf.subarray(start + headerBytes, end), status);
        return end + 2;
      }
      case 80: // PING, PONG
        if (line === 'PING') this.on.ping();
        else this.on.pong();
        return start;
      case 73: // INFO {json}
        this.on.info(JSON.parse(line.slice(5)));
        return start;
      case 45: // -ERR '<message>'
        this.on.error(line.slice(5).replace(/^'|'$/g, ''));
        return start;
      case 43: // +OK (only with verbose, which we turn off)
        return start;
      default:
        this.on.error(`unexpected protocol line: ${line.slice(0, 80)}`);
        return start;
    }
  }
}

/** The decimal number in buf[from, to); throws on anything else. */
function digits(buf: Buffer, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) {
    const digit = buf[i] - 48;
    if (digit < 0 || digit > 9) throw new Error(`unexpected protocol line: not a number: ${buf.toString('latin1', from, to)}`);
    n = n * 10 + digit;
  }
  if (to === from) throw new Error('unexpected protocol line: a number missing');
  return n;
}

interface Subscription {
  subject: string;
  queue?: string;
  callback: MessageCallback;
}

export class NatsClient {
  private socket?: net.Socket;
  private closed = false;
  /** host:port of the server connected to, or last connected to. */
  private current = '';
  private payloadLimit = 1024 * 1024;
  private heartbeat?: Heartbeat;
  private lameDuckTimer?: NodeJS.Timeout;
  /** What is written in this event-loop turn, sent as one write; during an outage, what waits for the next connection. */
  private out: Uint8Array[] = [];
  private outBytes = 0;
  private flushScheduled = false;
  private dropped = 0;
  private readonly subscriptions = new Map<number, Subscription>();
  /** Subscriptions ended on this connection, whose last messages may still be on their way (forgotten at a reconnection). */
  private readonly ended = new Map<number, Subscription>();
  private nextSid = 1;
  /** Made with the first request. */
  private requests?: RequestMux;

  private constructor(
    private readonly servers: Servers,
    private readonly options: NatsOptions,
  ) {}

  /** `servers`: nats://host:port or tls://host:port (or host:port), tried in turn. */
  static async connect(servers: string[], options: NatsOptions): Promise<NatsClient> {
    const client = new NatsClient(new Servers(servers), options);
    await client.establish(false);
    return client;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  get server(): string {
    return this.current;
  }

  publish(subject: string, payload: Uint8Array, reply?: string): void {
    if (this.closed) throw new Error('the NATS connection is closed');
    if (payload.length > this.payloadLimit) throw new Error(`a payload of ${payload.length} bytes is over the NATS server's max_payload (${this.payloadLimit})`);
    const line = Buffer.from(reply ? `PUB ${subject} ${reply} ${payload.length}\r\n` : `PUB ${subject} ${payload.length}\r\n`);
    if (!this.socket && this.outBytes + line.length + payload.length + 2 > OUTAGE_BUFFER_BYTES) {
      if (this.dropped++ === 0) this.options.warning?.(`NATS is unreachable and ${OUTAGE_BUFFER_BYTES >> 20} MiB of publishes wait: dropping further ones until it is back`);
      return;
    }
    this.write(line, payload, CRLF);
  }

  /**
   * Ends every subscription of this client to `subject` (a partition handed to another router). What the server
   * sent before it read the UNSUB still reaches the handler: a router passes such a send on rather than drop it.
   */
  unsubscribe(subject: string): void {
    for (const [sid, s] of this.subscriptions) {
      if (s.subject !== subject) continue;
      this.subscriptions.delete(sid);
      this.ended.set(sid, s);
      if (this.socket) this.write(Buffer.from(`UNSUB ${sid}\r\n`));
    }
  }

  subscribe(subject: string, callback: MessageCallback, queue?: string): void {
    const sid = this.nextSid++;
    this.subscriptions.set(sid, { subject, queue, callback });
    // Sent now if connected; otherwise with every subscription at the next handshake.
    if (this.socket) this.write(subLine(sid, subject, queue));
  }

  /** One request, one reply, on a single wildcard inbox subscription shared by all requests. */
  request(subject: string, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (!this.requests) {
      const requests = (this.requests = new RequestMux(`${this.inbox()}.`));
      this.subscribe(`${requests.prefix}*`, (data, _reply, replySubject, status) => requests.answer(replySubject, data, status));
    }
    return this.requests.request(subject, timeoutMs, (replyTo) => this.publish(subject, payload, replyTo));
  }

  /** A subject nobody else will pick, for replies to this client. */
  inbox(): string {
    return `${this.options.inboxPrefix ?? '_INBOX'}.${randomBytes(12).toString('hex')}`;
  }

  /** The largest payload the server accepts, from its INFO. */
  get maxPayload(): number {
    return this.payloadLimit;
  }

  /** Sends what is buffered, then closes; requests still waiting fail. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.heartbeat?.stop();
    clearTimeout(this.lameDuckTimer);
    this.requests?.failAll('the NATS connection is closed');
    const socket = this.socket;
    if (!socket) return;
    this.flush();
    await new Promise<void>((resolve) => {
      // A server that vanished never finishes the close: give it CLOSE_TIMEOUT_MS, then drop the socket.
      const timer = setTimeout(() => socket.destroy(), CLOSE_TIMEOUT_MS);
      socket
        .once('close', () => {
          clearTimeout(timer);
          resolve();
        })
        .end();
    });
  }

  private write(...pieces: Uint8Array[]): void {
    for (const piece of pieces) {
      this.out.push(piece);
      this.outBytes += piece.length;
    }
    if (this.socket && !this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    // A socket on its way out (ended by the server, destroyed for missed PINGs) keeps the data for the next one.
    if (!this.socket?.writable || this.outBytes === 0) return;
    this.socket.write(this.out.length === 1 ? this.out[0] : Buffer.concat(this.out, this.outBytes));
    this.out = [];
    this.outBytes = 0;
  }

  /**
   * Connects to the servers in turn until one completes the handshake, waiting a random, growing
   * time between attempts (and before the first one after a lost connection). A one-off client
   * gives up after one round; a fatal error ends every client's attempts.
   */
  private async establish(reconnecting: boolean): Promise<void> {
    for (let attempt = 0; !this.closed; attempt++) {
      if (reconnecting || attempt >= this.servers.length) await sleep(Math.random() * Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(attempt, 10)));
      if (this.closed) return;
      const server = this.servers.take();
      try {
        const socket = await this.handshake(server);
        if (this.closed) socket.destroy();
        else this.attach(socket, serverName(server));
        return;
      } catch (err) {
        if (err instanceof NatsFatalError) {
          if (!reconnecting) throw err;
          this.options.warning?.(err.message);
          void this.close();
          this.options.fatal?.(err);
          return;
        }
        if (!this.options.persistent && attempt + 1 >= this.servers.length) throw err;
      }
    }
  }

  /**
   * Opens a connection: the server's INFO, a TLS upgrade when either side wants it, then CONNECT
   * (signing the INFO's nonce) and a PING whose PONG says the server accepted us, or -ERR says why not.
   */
  private handshake(server: Server): Promise<net.Socket> {
    const { host, port } = server;
    const where = `NATS at ${serverName(server)}`;
    return new Promise((resolve, reject) => {
      // onread: each read straight to the parser, without Node's Readable stream and its 'data' events (about 10% of an
      // edge's CPU at a million streams, perf). The buffer is reused, so every read is copied out: payloads outlive it.
      // A TLS connection reads through 'data' events instead: tls.connect() ignores onread when it wraps a socket.
      const plain = net.connect({ host, port, onread: { buffer: readBuffer, callback: (n, buf) => this.read(parser, socket, Buffer.from(buf.subarray(0, n))) } });
      plain.setNoDelay(true);
      let socket: net.Socket = plain;
      let greeted = false;
      let done = false;
      const fail = (why: string, fatal = false) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.destroy();
        plain.destroy();
        const message = `cannot connect to ${where}: ${why}`;
        reject(fatal ? new NatsFatalError(message) : new Error(message));
      };
      const timer = setTimeout(() => fail(`no handshake within ${HANDSHAKE_TIMEOUT_MS} ms`), HANDSHAKE_TIMEOUT_MS);
      const sendConnect = (info: ServerInfo) => {
        const { user } = this.options;
        if (info.auth_required && !user) return fail('the server requires credentials (--nats-creds)', true);
        const auth = user && info.nonce ? { nkey: user.publicKey, sig: user.sign(info.nonce) } : {};
        const connect = { verbose: false, pedantic: false, tls_required: socket !== plain, name: this.options.name, lang: 'c1m', version: '1', protocol: 1, headers: true, no_responders: true, ...auth };
        socket.write(`CONNECT ${JSON.stringify(connect)}\r\nPING\r\n`);
      };
      const upgrade = (info: ServerInfo) => {
        // Off the read callback: the TLS socket takes over the plain one's handle.
        setImmediate(() => {
          if (done) return;
          // A server name must not be an IP address (RFC 6066); the certificate is checked against `host` either way.
          const secure = tls.connect({ socket: plain, host, servername: net.isIP(host) ? undefined : host, ca: this.options.ca });
          socket = secure;
          secure.on('data', (data: Buffer) => this.read(parser, secure, data));
          secure.once('secureConnect', () => sendConnect(info));
          secure.on('error', (err: NodeJS.ErrnoException) => fail(`TLS: ${err.message}`, !done && CERTIFICATE_ERROR.test(err.code ?? '')));
          secure.on('close', () => (done ? this.lost(secure) : fail('connection closed')));
        });
      };
      const parser = new Parser({
        message: (sid, subject, reply, data, status) => this.dispatch(sid, subject, reply, data, status),
        info: (info) => {
          if (info.max_payload) this.payloadLimit = info.max_payload;
          if (greeted) return this.update(info, socket);
          greeted = true;
          this.servers.learn(info.connect_urls, server);
          const serverTls = info.tls_required || info.tls_available;
          if (server.tls && !serverTls) return fail('it does not offer TLS, and the URL asks for it (tls://)', true);
          if (server.tls || info.tls_required) upgrade(info);
          else sendConnect(info);
        },
        ping: () => socket.write('PONG\r\n'),
        pong: () => {
          this.heartbeat?.pong();
          if (done) return;
          done = true;
          clearTimeout(timer);
          resolve(socket);
        },
        error: (message) => {
          if (done) return this.options.warning?.(`NATS server: ${message}`);
          if (/authorization violation|authentication/i.test(message)) return fail(`it refused our credentials (${message}): check --nats-creds`, true);
          fail(message);
        },
      });
      plain.on('error', (err) => fail(err.message));
      plain.on('close', () => (done ? this.lost(plain) : fail('connection closed')));
    });
  }

  /** A message to its subscription's handler: a subscription of this client, or one just ended whose last messages still come. */
  private dispatch(sid: number, subject: string, reply: string | undefined, data: Uint8Array, status: string | undefined): void {
    const subscription = this.subscriptions.get(sid) ?? this.ended.get(sid);
    if (!subscription) return;
    // A handler that throws must not throw out of the socket's read callback: that would end the process.
    try {
      subscription.callback(data, reply, subject, status);
    } catch (err) {
      this.options.warning?.(`a handler of ${subject} threw: ${(err as Error).stack ?? err}`);
    }
  }

  /** Feeds the parser; nothing may throw out of a socket's read callback, so a protocol error ends the connection instead. */
  private read(parser: Parser, socket: net.Socket, data: Buffer): boolean {
    try {
      parser.push(data);
    } catch (err) {
      this.options.warning?.(`NATS protocol error, reconnecting: ${(err as Error).message}`);
      socket.destroy();
    }
    return true;
  }

  /** An INFO on an open connection: new cluster members, or lame duck mode. */
  private update(info: ServerInfo, socket: net.Socket): void {
    const via = this.servers.named(this.current);
    if (via) this.servers.learn(info.connect_urls, via);
    if (!info.ldm || this.lameDuckTimer) return;
    this.options.warning?.(`NATS at ${this.current} is in lame duck mode (shutting down): moving to another server`);
    this.lameDuckTimer = setTimeout(() => {
      this.lameDuckTimer = undefined;
      if (socket === this.socket) socket.destroy();
    }, Math.random() * LAME_DUCK_JITTER_MS);
  }

  /** The handshake is done: subscriptions first, then what waited, then liveness checks. */
  private attach(socket: net.Socket, server: string): void {
    const reconnection = this.current !== '';
    this.socket = socket;
    this.current = server;
    this.ended.clear();
    const subs = [...this.subscriptions].map(([sid, s]) => subLine(sid, s.subject, s.queue));
    this.out.unshift(...subs);
    this.outBytes += subs.reduce((n, line) => n + line.length, 0);
    this.flush();
    if (this.dropped > 0) this.options.warning?.(`${this.dropped} publishes were dropped while NATS was unreachable`);
    this.dropped = 0;
    this.heartbeat = new Heartbeat(
      this.options.pingIntervalMs ?? 2000,
      () => this.write(Buffer.from('PING\r\n')),
      () => {
        this.options.warning?.(`NATS at ${server} stopped answering PINGs: reconnecting`);
        socket.destroy();
      },
    );
    if (reconnection) this.options.reconnected?.();
  }

  private lost(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.heartbeat?.stop();
    clearTimeout(this.lameDuckTimer);
    this.lameDuckTimer = undefined;
    if (this.closed) return;
    this.options.warning?.(`lost the connection to NATS at ${this.current}`);
    if (this.options.persistent) void this.establish(true);
    else void this.close();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const subLine = (sid: number, subject: string, queue?: string) => Buffer.from(queue ? `SUB ${subject} ${queue} ${sid}\r\n` : `SUB ${subject} ${sid}\r\n`);
