/**
 * WebSocket streams at `/ws/<id>`, on uWebSockets.js's own WebSocket support:
 * the frames' payload (uWS writes the frame headers), backpressure through
 * uWS's buffered amount with the same slow-consumer rule and counters as the
 * other streams, batched per event-loop turn by the shared StreamHub.
 * The client's only frames change the topics the stream listens to
 * (`subscribe <topics>`, `unsubscribe <topics>`, see topics.ts); any other
 * frame closes the socket.
 */
import { isUtf8 } from 'node:buffer';
import { NO_TOPICS, type Connection } from '../router/registry.js';
import type { Chunk } from '../router/router.js';
import { resume, type After } from './resume.js';
import { advance, framedOnce, overflows, positions, type HubStream, type StreamHub } from './stream.js';
import { changeTopics } from './topics.js';
import type { HttpRequest, HttpResponse, us_socket_context_t, WebSocket, WebSocketBehavior } from './uws.js';

/** The largest client frame answered with a close frame (see wsBehavior). */
export const MAX_CLIENT_FRAME = 16 * 1024;

/** Close codes (RFC 6455): drain or shutdown; a client frame that is not a command. A slow consumer is cut without one: it would not read it. */
const CLOSE_GOING_AWAY = 1001;
const CLOSE_UNSUPPORTED = 1003;
/** Topic changes faster than TOPIC_CHANGES allows. */
const CLOSE_POLICY = 1008;

/**
 * Subscribes and unsubscribes one stream may make: `perSecond` on average, `burst` at once. In a cluster each
 * change goes to every router in its edge's presence: a client must not turn its frames into the routers' load.
 */
const TOPIC_CHANGES = { perSecond: 10, burst: 20 } as const;

/**
 * A frame is a header line, then the payload verbatim: `welcome\n<text>`,
 * `message\n<message>`, or with the message's id `message id=<id>\n<message>`,
 * `lost\n<why>` first on a resumed stream whose history is lost, and the answer
 * to each subscribe or unsubscribe, in order: `topics\n<the topics it listens
 * to now, comma-separated>`, or `refused\n<why>` (nothing changed). A text
 * frame when the payload is UTF-8, else binary: a browser closes a socket on a
 * text frame that is not.
 */
const MESSAGE = Buffer.from('message\n');
const BINARY = new WeakSet<Buffer>();

function wsFrame(chunk: Chunk, token: number | string | undefined = chunk.id): Buffer {
  const message = chunk.subarray(0, chunk.length - 1); // the router's '\n' belongs to line-based transports
  const header = token === undefined ? MESSAGE : Buffer.from(`message id=${token}\n`);
  const frame = Buffer.concat([header, message], header.length + message.length);
  if (!isUtf8(message)) BINARY.add(frame);
  return frame;
}
const framed = framedOnce(wsFrame);

const wsWelcome = (id: number): string => `welcome\nWelcome, Url: '/ws/${id}' Id: ${id}`;

/**
 * The token a browser put in Sec-WebSocket-Protocol (`new WebSocket(url, ['c1m', 'token.' + token])`)
 * and the protocol to answer with, or why the offer is refused. A browser fails the handshake unless
 * the answer names a protocol it offered, and the one to name is `c1m`, never the token (it would be
 * echoed in the response): an offer without `c1m` is refused.
 */
export function protocolToken(header: string): { token: string; protocol: string } | string {
  const offered = header.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (offered.length === 0) return { token: '', protocol: '' };
  if (!offered.includes('c1m')) return "offer the subprotocol 'c1m', with the token beside it: new WebSocket(url, ['c1m', 'token.' + token])";
  const entry = offered.find((p) => p.startsWith('token.'));
  return { token: entry?.slice('token.'.length) ?? '', protocol: 'c1m' };
}

const OPEN = 0;
/** uWS held unsent bytes after the last flush; the buffered amount counts against the backlog until `drain` says it is gone. */
const BLOCKED = 1;
const CLOSING = 2;
const CLOSED = 3;

/** What one corked group sends, set before ws.cork() so a flush allocates no closure (as in stream.ts). */
const group: { ws: WebSocket<WsData>; one: Buffer | null; many: Buffer[]; dropped: boolean } = { ws: null!, one: null, many: [], dropped: false };
const DROPPED = 2; // ws.send: over maxBackpressure, the message was not kept
function sendGroup(): void {
  if (group.one !== null) {
    group.dropped = group.ws.send(group.one, BINARY.has(group.one)) === DROPPED;
    return;
  }
  for (const frame of group.many) group.dropped = group.ws.send(frame, BINARY.has(frame)) === DROPPED || group.dropped;
}

/** uWS copies the user data's properties onto its WebSocket object: the stream rides on it. */
interface WsData {
  stream: WsStream;
}

/** One open WebSocket: uWS's socket object, with this stream as its one property. */
export class WsStream implements Connection, HubStream {
  private ws: WebSocket<WsData> | null = null;
  private pending: Buffer | Buffer[] | null = null;
  private queued = 0;
  private state = OPEN;
  /** The id of the last message written. */
  private lastId = 0;
  /** With several partitions, the last id of each instead (a field of its own: lastId stays a number on the one-partition path). */
  private lastIds: number[] | undefined;
  /**
   * When the topic changes made so far would have been spent at TOPIC_CHANGES.perSecond, in ticks of one change
   * (100 ms): a cell-rate limit in one small integer, so the field stays unboxed.
   */
  private changesDueAt = 0;

  constructor(
    private readonly hub: StreamHub,
    readonly user: number,
    /** The last message id the client saw (its token: see lastEventId), when it resumes. */
    private readonly after?: After,
    public topics: readonly string[] = NO_TOPICS,
    /** What its token lets it listen to; undefined when the server asks for no token. */
    private readonly scope?: readonly string[],
  ) {}

  /** uWS open: the handshake is done. What the client missed, if it resumes, goes before any live message. */
  opened(ws: WebSocket<WsData>): void {
    this.ws = ws;
    this.hub.transports.ws.open++;
    ws.cork(() => ws.send(wsWelcome(this.user), false));
    resume(this.hub, this, this.after);
  }

  get ended(): boolean {
    return this.state === CLOSED;
  }

  /** Every message frame shows its id, where there are ids. */
  get numbered(): boolean {
    return true;
  }

  lost(why: string): void {
    this.queue(Buffer.from(`lost\n${why}`));
  }

  /** A message once, in id order, as ChunkedStream.write. */
  write(chunk: Chunk): number {
    if (chunk.id !== undefined) {
      if (chunk.partition !== undefined) {
        const token = advance((this.lastIds ??= positions(this.hub)), chunk);
        return token === undefined ? 0 : this.queue(wsFrame(chunk, token));
      }
      if (chunk.id <= this.lastId) return 0;
      this.lastId = chunk.id;
    }
    return this.queue(framed(chunk));
  }

  startAt(start: number[]): void {
    this.lastIds = start.slice();
  }

  /** What a chunk weighs on this stream, as framed (see ChunkedStream.framedSize). */
  framedSize(chunk: Chunk): number {
    return framed(chunk).length;
  }

  private queue(frame: Buffer): number {
    if (this.state >= CLOSING) return 0;
    // Only a blocked socket has bytes in uWS: the native call is skipped on the common path.
    if (overflows(this.queued + (this.state === BLOCKED ? this.ws!.getBufferedAmount() : 0), frame.length, this.hub.maxBacklog)) {
      this.state = CLOSING;
      this.pending = null;
      this.hub.schedule(this); // closed from the flush: write() runs inside a router send
      return 0;
    }
    this.queued += frame.length;
    if (this.pending === null) {
      this.pending = frame;
      this.hub.schedule(this);
    } else if (Array.isArray(this.pending)) {
      this.pending.push(frame);
    } else {
      this.pending = [this.pending, frame];
    }
    return 1;
  }

  flush(): void {
    if (this.state === CLOSING) return this.cut();
    const pending = this.pending;
    if (this.state === CLOSED || pending === null) return;
    const ws = this.ws!;
    // One message on a socket that held nothing: queue() admitted it whole, whatever its size.
    const alone = !Array.isArray(pending) && this.state === OPEN;
    const counters = this.hub.transports.ws;
    counters.chunks += Array.isArray(pending) ? pending.length : 1;
    counters.bytes += this.queued;
    this.pending = null;
    this.queued = 0;
    group.ws = ws;
    group.dropped = false;
    if (Array.isArray(pending)) group.many = pending;
    else group.one = pending;
    ws.cork(sendGroup);
    group.one = null;
    group.many = [];
    const buffered = ws.getBufferedAmount();
    if (group.dropped || (buffered > this.hub.maxBacklog && !alone)) return this.cut();
    this.state = buffered > 0 ? BLOCKED : OPEN;
  }

  /** A slow consumer: closed at once, counted once. */
  private cut(): void {
    this.state = CLOSING;
    this.hub.transports.ws.slowConsumerCloses++;
    this.ws!.close(); // runs the close handler, which logs the stream out
  }

  /** A frame from the client: a subscribe or unsubscribe, answered in order among the messages; anything else closes the socket. */
  received(message: ArrayBuffer, isBinary: boolean): void {
    if (this.state >= CLOSING) return;
    const topics = isBinary ? null : changeTopics(this.topics, Buffer.from(message).toString(), this.scope);
    if (topics === null) return this.endWith(CLOSE_UNSUPPORTED, 'not a command: send subscribe <topics> or unsubscribe <topics>');
    const now = Math.floor((performance.now() * TOPIC_CHANGES.perSecond) / 1000);
    this.changesDueAt = Math.max(this.changesDueAt, now) + 1;
    if (this.changesDueAt - now > TOPIC_CHANGES.burst)
      return this.endWith(CLOSE_POLICY, `too many topic changes: at most ${TOPIC_CHANGES.perSecond} a second`);
    if (!Array.isArray(topics)) return void this.queue(Buffer.from(`refused\n${topics.refused}`));
    this.hub.registry.setTopics(this, topics);
    this.queue(Buffer.from(`topics\n${topics.join(',')}`));
  }

  /** A close frame after what is queued (the answers to its earlier commands among it). */
  private endWith(code: number, reason: string): void {
    this.flush();
    if (this.state < CLOSING) this.ws!.end(code, reason);
  }

  /** uWS drain: some of what it held went out. */
  drained(): void {
    if (this.state === BLOCKED && this.ws!.getBufferedAmount() === 0) this.state = OPEN;
  }

  /** uWS close, whoever closed it. A socket uWS dropped (idle timeout: no pong) while it still held our bytes was a slow consumer too. */
  closed(): void {
    if (this.state === CLOSED) return;
    if (this.state === BLOCKED) this.hub.transports.ws.slowConsumerCloses++;
    this.state = CLOSED;
    this.hub.transports.ws.open--;
    this.pending = null;
    this.ws = null;
    this.hub.registry.logout(this);
  }

  /** Drain or shutdown: a close frame, so the client knows to reconnect. */
  close(): void {
    if (this.state >= CLOSING) return;
    this.ws!.end(CLOSE_GOING_AWAY, 'going away');
  }
}

/**
 * uWS's WebSocket settings for the streams. `upgrade` checks the request and
 * calls upgradeWs, or answers it with an error.
 */
export function wsBehavior(hub: StreamHub, upgrade: (res: HttpResponse, req: HttpRequest, context: us_socket_context_t) => void): WebSocketBehavior<WsData> {
  const idleTimeout = hub.heartbeatSeconds > 0 ? wsIdleTimeout(hub.heartbeatSeconds) : 0;
  return {
    idleTimeout,
    sendPingsAutomatically: idleTimeout > 0,
    compression: 0, // uWS.DISABLED: a compressor per socket would cost more than the stream
    // Clients send control frames and subscribe/unsubscribe; any other data frame gets 1003. uWS buffers a frame up
    // to this whole before it calls `message`, and cuts a longer one unread without a close frame (1006 at the client).
    maxPayloadLength: MAX_CLIENT_FRAME,
    // Above our own backlog rule, so uWS never drops a message before the stream is closed as a slow consumer.
    maxBackpressure: 2 * hub.maxBacklog + 64 * 1024,
    upgrade,
    open: (ws) => ws.getUserData().stream.opened(ws),
    message: (ws, message, isBinary) => ws.getUserData().stream.received(message, isBinary),
    drain: (ws) => ws.getUserData().stream.drained(),
    close: (ws) => ws.getUserData().stream.closed(),
  };
}

/**
 * uWS's idleTimeout for pings at least every `heartbeatSeconds`. uWS pings a
 * socket silent for idleTimeout less a margin (4, 8 or 16 s, larger for
 * longer timeouts: WebSocketContextData's calculateIdleTimeoutCompnents) and
 * drops it a margin after an unanswered ping; its timers tick every 4 s, so a
 * wait of 4k s fires 4(k-1) to 4k s after it was set. Hence a ping wait of the
 * heartbeat rounded down to a multiple of 4 (at least 4), plus the margin uWS
 * will compute for the sum.
 */
function wsIdleTimeout(heartbeatSeconds: number): number {
  const ping = 4 * Math.max(1, Math.floor(heartbeatSeconds / 4));
  return ping + (ping < 12 ? 4 : ping < 24 ? 8 : 16);
}

/** Completes the handshake for an admitted request. */
export function upgradeWs(res: HttpResponse, req: HttpRequest, context: us_socket_context_t, stream: WsStream, protocol: string): void {
  res.upgrade<WsData>({ stream }, req.getHeader('sec-websocket-key'), protocol, req.getHeader('sec-websocket-extensions'), context);
}
