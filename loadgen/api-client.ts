/**
 * msggen's keep-alive HTTP/1.1 connections to the backend API, one request in
 * flight on each. A request waits in one queue for the next free connection,
 * and its body is made only when it is written, so the `t=` stamp in it is the
 * time it went to the kernel. undici stamped at dispatch and wrote later, so
 * on a busy box the sends that catch up a late timer counted their wait in the
 * sender as delivery latency (strace; the write-up of `npm run bench`'s unicast latency).
 */
import { connect, type Socket } from 'node:net';
import { errorCode } from '../subsmanager/errors.js';

export interface Answer {
  status: number;
  body: string;
  /** From the write of the request to its whole answer. */
  micros: number;
}

interface Request {
  method: 'GET' | 'POST';
  path: string;
  /** Called when the request is written. */
  body: () => string;
  done: (answer: Answer) => void;
  failed: (kind: string) => void;
}

const errorKind = (socket: Socket) => String(errorCode(socket.errored) ?? 'closed');

const HEAD_END = '\r\n\r\n';
const RECONNECT_MS = 100;

class Connection {
  private socket!: Socket;
  private inFlight?: Request;
  private writtenAt = 0;
  private received = '';
  private closed = false;
  /** Settles with the first connection: resolved once connected, rejected if that failed. */
  readonly ready: Promise<void>;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly headers: string,
    /** Asks the client for the next queued request when this one is free. */
    private readonly next: (connection: Connection) => void,
  ) {
    this.open();
    const first = this.socket;
    this.ready = new Promise((resolve, reject) => {
      first.once('connect', resolve);
      first.once('close', () => reject(new Error(`cannot connect to the API at ${host}:${port}: ${errorKind(first)}`)));
    });
  }

  /** Connected with nothing in flight. */
  get free(): boolean {
    return this.inFlight === undefined && !this.socket.connecting && !this.socket.destroyed;
  }

  write(request: Request): void {
    this.inFlight = request;
    const body = request.body();
    this.writtenAt = performance.now();
    this.socket.write(
      `${request.method} ${request.path} HTTP/1.1\r\nhost: ${this.host}:${this.port}\r\n${this.headers}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }

  /** Ends the connection for good; a request in flight fails as `kind`. */
  close(kind: string): void {
    this.closed = true;
    this.fail(kind);
    this.socket.destroy();
  }

  private open(): void {
    const socket = connect({ host: this.host, port: this.port, noDelay: true });
    this.socket = socket;
    this.received = '';
    socket.setEncoding('latin1');
    socket.on('connect', () => this.next(this));
    socket.on('data', this.read);
    socket.on('error', () => {}); // 'close' follows, and reports it
    socket.on('close', () => {
      this.fail(errorKind(socket));
      if (!this.closed) setTimeout(() => this.closed || this.open(), RECONNECT_MS).unref();
    });
  }

  private fail(kind: string): void {
    const request = this.inFlight;
    this.inFlight = undefined;
    request?.failed(kind);
  }

  /** Parses answers with a Content-Length, the only kind the API sends; anything else is a protocol error that ends the connection. */
  private readonly read = (data: string): void => {
    this.received += data;
    const headEnd = this.received.indexOf(HEAD_END);
    if (headEnd < 0) return;
    const head = this.received.slice(0, headEnd);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    const status = Number(head.slice(9, 12));
    if (!head.startsWith('HTTP/1.1 ') || !length || !this.inFlight) {
      this.fail('protocol');
      this.socket.destroy();
      return;
    }
    const end = headEnd + HEAD_END.length + Number(length[1]);
    if (this.received.length < end) return;
    const body = this.received.slice(headEnd + HEAD_END.length, end);
    this.received = this.received.slice(end);
    const request = this.inFlight;
    this.inFlight = undefined;
    request.done({ status, body, micros: (performance.now() - this.writtenAt) * 1000 });
    if (/\r\nconnection: *close/i.test(head)) this.socket.destroy();
    else this.next(this);
  };
}

/** A fixed number of keep-alive connections and the queue in front of them. */
export class ApiClient {
  private readonly connections: Connection[];
  /** Connections that were free when last seen; checked again when taken. */
  private readonly idle = new Set<Connection>();
  private readonly queue: Request[] = [];
  private closed = false;

  constructor(host: string, port: number, connections: number, headers: Record<string, string>) {
    const lines = Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    this.connections = Array.from({ length: connections }, () => new Connection(host, port, lines, this.next));
  }

  /** Requests queued and not yet written. */
  get queued(): number {
    return this.queue.length;
  }

  /** Resolves once every connection is open; rejects, closing them all, if one could not be. */
  async ready(): Promise<void> {
    try {
      await Promise.all(this.connections.map((c) => c.ready));
    } catch (err) {
      this.close('closed');
      throw err;
    }
  }

  request(method: Request['method'], path: string, body: () => string, done: Request['done'], failed: Request['failed']): void {
    if (this.closed) return failed('closed');
    const request = { method, path, body, done, failed };
    for (const connection of this.idle) {
      this.idle.delete(connection);
      if (connection.free) return connection.write(request);
    }
    this.queue.push(request);
  }

  /** Ends every connection; requests in flight or queued fail as `kind`. */
  close(kind = 'unanswered'): void {
    this.closed = true;
    this.queue.splice(0).forEach((r) => r.failed(kind));
    this.connections.forEach((c) => c.close(kind));
  }

  private readonly next = (connection: Connection): void => {
    const request = this.queue.shift();
    if (request) connection.write(request);
    else this.idle.add(connection);
  };
}
