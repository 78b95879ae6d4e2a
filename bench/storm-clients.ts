/**
 * A child process of the reconnect-storm benchmark (bench/storm.ts) holding
 * many GET /test/<id> streams, each behaving as a page with the browser client
 * (server/browser-client.ts) does: it keeps the last message id it saw, and
 * when its stream ends it comes back after a full-jitter backoff, on one of the
 * edges it was told to reconnect to, resuming with ?lastEventId= (and the
 * topic it listens to, if any: listensTo).
 *
 * Raw sockets and a minimal chunked decoder rather than node:http: thousands
 * of streams reconnect within a second here, on the box the servers share,
 * and the clients' own cost should stay small. Every welcome, message, `lost`
 * and stream end goes to the parent, timed, in batches; the parent keeps the
 * ledger.
 */
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { epochMs } from '../router/latency.js';
import { BACKOFF_MS } from '../server/browser-client.js';
import { listensTo } from './topics.js';

const HOST = '127.0.0.1';

export interface OpenCommand {
  type: 'open';
  /** Users first..first+count-1, one stream each. */
  first: number;
  count: number;
  /** Stream i first connects to ports[i % ports.length], and retries there until its first welcome. */
  ports: number[];
  /** Where a stream that ended comes back: one of these, at random. */
  reconnectPorts: number[];
  /** Every stream resumes from here, even its first: like a page that loaded its state as of this id. */
  lastEventId: string;
  /** Loopback source addresses, in turn, so that no one address runs out of ports. */
  sources: string[];
  /** Streams opening at once. */
  concurrency: number;
  /** Topics of the run: a stream listens to listensTo(user, topics). */
  topics: number;
}

export type ClientsCommand = OpenCommand | { type: 'close' };

export interface ClientEvents {
  type: 'events';
  /** [user, epoch ms] of each welcome. */
  welcomes: [number, number][];
  /** [user, message id, send seq, epoch ms] of each message. */
  messages: [number, number, number, number][];
  /** [user, epoch ms] of each stream that ended after its welcome. */
  ends: [number, number][];
  /** Users whose stream started with `lost <why>`. */
  lost: number[];
  /** Answers other than 200 (503: edge full), and attempts that ended before a welcome (refused, reset). */
  refused: number;
  failed: number;
}

export type ClientsReply = ClientEvents | { type: 'opened'; welcomed: number; count: number; ms: number } | { type: 'closed' };

/**
 * The lines of an HTTP/1.1 response with a chunked body, as they arrive: the
 * status from the head, then the body's `\n`-separated lines wherever chunks
 * and reads cut them (empty lines, heartbeats, skipped). Enough for a c1m
 * stream, nothing more: a non-200 answer's body is not read.
 */
export class ChunkedLines {
  status = 0;
  private pending = '';
  private inHead = true;
  /** Data bytes of the current chunk still to come, then the CRLF after them. */
  private left = 0;
  private crlf = 0;
  private partial = '';
  private done = false;

  constructor(private readonly onLine: (line: string) => void) {}

  push(data: string): void {
    this.pending += data;
    while (!this.done) {
      if (this.inHead) {
        const end = this.pending.indexOf('\r\n\r\n');
        if (end < 0) return;
        this.status = Number(this.pending.slice(9, 12));
        this.pending = this.pending.slice(end + 4);
        this.inHead = false;
        this.done = this.status !== 200;
      } else if (this.left > 0 || this.crlf > 0) {
        if (this.pending.length === 0) return;
        const take = Math.min(this.left || this.crlf, this.pending.length);
        if (this.left > 0) {
          this.body(this.pending.slice(0, take));
          this.left -= take;
          if (this.left === 0) this.crlf = 2;
        } else this.crlf -= take;
        this.pending = this.pending.slice(take);
      } else {
        const end = this.pending.indexOf('\r\n');
        if (end < 0) return;
        this.left = parseInt(this.pending.slice(0, end), 16);
        this.pending = this.pending.slice(end + 2);
        // 0 is the body's last chunk; anything else unparsable is not a chunked body.
        if (!(this.left > 0)) this.done = true;
      }
    }
  }

  private body(text: string): void {
    let from = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', from)) {
      const line = this.partial + text.slice(from, nl);
      this.partial = '';
      from = nl + 1;
      if (line) this.onLine(line);
    }
    this.partial += text.slice(from);
  }
}

let report: ClientEvents = newReport();
function newReport(): ClientEvents {
  return { type: 'events', welcomes: [], messages: [], ends: [], lost: [], refused: 0, failed: 0 };
}

let stopped = false;
let sourceTurn = 0;
const clients: Client[] = [];
const pick = (ports: number[]) => ports[Math.floor(Math.random() * ports.length)];

class Client {
  /** Until its first welcome, told once, so that the next stream may start opening. */
  onFirstWelcome?: () => void;
  private everWelcomed = false;
  private welcomed = false;
  private attempt = 0;
  private socket?: net.Socket;
  private timer?: NodeJS.Timeout;

  constructor(
    readonly user: number,
    readonly home: number,
    private readonly cmd: OpenCommand,
    private lastId: string | undefined = cmd.lastEventId,
  ) {}

  connect(port: number): void {
    this.welcomed = false;
    const socket = net.connect({ host: HOST, port, localAddress: this.cmd.sources[sourceTurn++ % this.cmd.sources.length] });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    const lines = new ChunkedLines((line) => this.line(line));
    const topic = listensTo(this.user, this.cmd.topics);
    const query = (this.lastId === undefined ? 'ids=1' : `lastEventId=${this.lastId}`) + (topic ? `&topics=${topic}` : '');
    socket.once('connect', () => socket.write(`GET /test/${this.user}?${query} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`));
    socket.on('data', (text: string) => {
      lines.push(text);
      if (lines.status !== 0 && lines.status !== 200) {
        report.refused++;
        socket.destroy();
      }
    });
    socket.on('error', () => {}); // 'close' follows, and decides what next
    socket.once('close', () => this.ended(socket));
  }

  private line(line: string): void {
    if (line.startsWith('Welcome')) {
      this.welcomed = this.everWelcomed = true;
      this.attempt = 0;
      report.welcomes.push([this.user, epochMs()]);
      this.onFirstWelcome?.();
      this.onFirstWelcome = undefined;
      return;
    }
    if (line === '' || line.startsWith(' ')) return; // a heartbeat, or a line of a multi-line message (see NumberedStream)
    // `<id> m <subject> <seq> <sent at>`, or `lost <why>` at the start of a resumed stream.
    const [id, tag, , seq] = line.split(' ');
    if (id === 'lost') {
      this.lastId = undefined; // as the browser client: live from here, no resume point
      report.lost.push(this.user);
      return;
    }
    this.lastId = id;
    if (tag === 'm') report.messages.push([this.user, Number(id), Number(seq), epochMs()]);
  }

  private ended(socket: net.Socket): void {
    if (socket !== this.socket || stopped) return;
    this.socket = undefined;
    if (this.welcomed) report.ends.push([this.user, epochMs()]);
    else report.failed++;
    // As the browser client: a random wait up to min * 2^attempt (at most max), the bound doubling until a welcome.
    const delay = Math.random() * Math.min(BACKOFF_MS.max, BACKOFF_MS.min * 2 ** this.attempt);
    this.attempt++;
    const port = this.everWelcomed ? pick(this.cmd.reconnectPorts) : this.home;
    this.timer = setTimeout(() => this.connect(port), delay);
  }

  close(): void {
    clearTimeout(this.timer);
    // RST: no TIME_WAIT left behind to pin this source address's ports.
    this.socket?.resetAndDestroy();
    this.socket = undefined;
  }
}

async function open(cmd: OpenCommand): Promise<ClientsReply> {
  const started = performance.now();
  const mine = Array.from({ length: cmd.count }, (_, i) => new Client(cmd.first + i, cmd.ports[i % cmd.ports.length], cmd));
  clients.push(...mine);
  let next = 0;
  let welcomed = 0;
  const openNext = (): void => {
    if (next >= mine.length || stopped) return;
    const client = mine[next++];
    client.onFirstWelcome = () => {
      welcomed++;
      openNext();
    };
    client.connect(client.home);
  };
  for (let i = 0; i < cmd.concurrency; i++) openNext();
  const deadline = Date.now() + 120_000;
  while (welcomed < mine.length && Date.now() < deadline && !stopped) await new Promise((r) => setTimeout(r, 10));
  return { type: 'opened', welcomed, count: mine.length, ms: Math.round(performance.now() - started) };
}

function flush(): void {
  const r = report;
  if (r.welcomes.length + r.messages.length + r.ends.length + r.lost.length + r.refused + r.failed === 0) return;
  report = newReport();
  process.send!(r);
}

// Only as the benchmark's child process: the decoder above is imported by tests too.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.send) {
  const flushTimer = setInterval(flush, 50);
  process.on('message', async (cmd: ClientsCommand) => {
    if (cmd.type === 'open') process.send!(await open(cmd));
    else if (cmd.type === 'close') {
      stopped = true;
      clearInterval(flushTimer);
      for (const c of clients) c.close();
      flush();
      process.send!({ type: 'closed' }, () => process.exit(0));
    }
  });
  // The benchmark went away without closing us: nothing else would.
  process.on('disconnect', () => process.exit(0));
}
