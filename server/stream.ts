import { NO_TOPICS, type Connection, type Registry } from '../router/registry.js';
import { epochMs } from '../router/latency.js';
import type { Chunk } from '../router/router.js';
import { formatToken } from '../subsmanager/partitions.js';
import type { Replayer } from './resume.js';
import type { HttpResponse } from './uws.js';

/** Nothing written since the welcome; no onWritable handler yet (idle streams do not pay for one). */
const FRESH = 0;
const OPEN = 1;
/** A write came back short: uWS holds unsent bytes; new chunks wait in `pending` for onWritable. */
const BLOCKED = 2;
/** Over the backlog limit: closed at the next flush, never written again. */
const CLOSING = 3;
const CLOSED = 4;

/** The streams c1m serves: chunked HTTP at /test/<id>, EventSource at /sse/<id>, WebSocket at /ws/<id>. */
export const TRANSPORTS = ['chunked', 'sse', 'ws'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/** One transport's counters, for /stats and /metrics. */
export class TransportCounters {
  /** Streams open now. */
  open = 0;
  /** Messages written (heartbeats included), and their bytes as framed for the transport. */
  chunks = 0;
  bytes = 0;
  slowConsumerCloses = 0;
  /** Streams refused for a missing (401), wrong or expired (403) token. */
  authFailures = 0;
}

export type TransportStats = Record<Transport, { open: number; chunks: number; bytes: number; slowConsumerCloses: number; authFailures: number }>;

/** A plain copy of the hub's counters per transport (for /stats and the bus), or zeros. */
export const transportStats = (hub?: StreamHub): TransportStats =>
  Object.fromEntries(TRANSPORTS.map((t) => [t, { ...(hub?.transports[t] ?? new TransportCounters()) }])) as TransportStats;

/** Several processes' counters added up (a router over its edges); a missing entry (an edge of an older build) counts as none. */
export function sumTransportStats(list: (TransportStats | undefined)[]): TransportStats {
  const total = transportStats();
  for (const stats of list) {
    if (!stats) continue;
    for (const t of TRANSPORTS) for (const key of Object.keys(total[t]) as (keyof TransportStats[Transport])[]) total[t][key] += stats[t]?.[key] ?? 0;
  }
  return total;
}

/** What the hub's flush and heartbeat need from a stream of any transport. */
export interface HubStream {
  flush(): void;
  write(chunk: Buffer): number;
}

/** A stream the hub heartbeats (chunked, SSE). */
interface BeatingStream extends HubStream {
  /** The hub's tick (StreamHub.tick) at the stream's last write to its socket, or at its opening. */
  readonly wroteAt: number;
}

/**
 * Shared by all streams of one server, whatever their transport: batches
 * writes so that every chunk a connection received during one event-loop turn
 * goes out in a single corked write (many sends fanning out to the same users
 * cost one syscall per user, not one per message), and keeps the counters.
 */
export class StreamHub {
  readonly transports: Record<Transport, TransportCounters> = { chunked: new TransportCounters(), sse: new TransportCounters(), ws: new TransportCounters() };
  /** Totals over the transports. */
  get open(): number {
    return this.sum('open');
  }
  get chunks(): number {
    return this.sum('chunks');
  }
  get bytes(): number {
    return this.sum('bytes');
  }
  get slowConsumerCloses(): number {
    return this.sum('slowConsumerCloses');
  }
  get authFailures(): number {
    return this.sum('authFailures');
  }
  private sum(key: keyof TransportCounters): number {
    const t = this.transports;
    return t.chunked[key] + t.sse[key] + t.ws[key];
  }
  /** Told, at each flush, how long each message noted with noteSend() took from its send to its write (ms). */
  onWritten?: (ms: number) => void;
  /** What resuming streams missed, where this process keeps a history. */
  replay?: Replayer;
  /** The partitions whose ids streams get (a cluster's, see subsmanager/partitions.ts): with several, each stream keeps one last id per partition. */
  partitions = 1;
  private dirty: HubStream[] = [];
  private flushScheduled = false;
  private sentAt: number[] = [];
  /** Every open stream that the hub heartbeats (chunked, SSE), kept only when heartbeats are on; WebSockets have uWS's pings. */
  readonly heartbeatStreams: Set<BeatingStream> | null;
  /** The heartbeat timer's ticks so far: the clock of the streams' `wroteAt` (a small integer, so a stream stores it unboxed). */
  tick = 0;
  private readonly heartbeatTimer?: NodeJS.Timeout;
  /** Where the heartbeat round stands: it visits a slice of the streams per tick, never all in one event-loop turn. */
  private heartbeatRound?: Iterator<BeatingStream>;
  /** Ticks a round of visits takes: every stream is looked at this often. */
  private readonly roundTicks: number;
  /** A stream silent for this many ticks (the interval) when visited gets a heartbeat: none is silent longer than the interval and a round. */
  private readonly silentTicks: number;

  constructor(
    readonly registry: Registry,
    readonly maxBacklog: number,
    /**
     * Seconds between heartbeats (0: none): an empty line written to every
     * chunked stream (a comment line on SSE; see sse.ts). An idle stream otherwise sends nothing, so a peer that vanished
     * without FIN or RST would hold its slot forever, and a proxy's read timeout cuts it; with data in flight the
     * kernel gives up on a dead peer after its retransmission timeout (net.ipv4.tcp_retries2)
     * and the stream is logged out.
     */
    readonly heartbeatSeconds = 0,
  ) {
    this.heartbeatStreams = heartbeatSeconds > 0 ? new Set() : null;
    const tickMs = Math.min(HEARTBEAT_TICK_MS, heartbeatSeconds * 1000);
    const intervalTicks = Math.round((heartbeatSeconds * 1000) / tickMs);
    this.roundTicks = Math.max(1, Math.floor(intervalTicks / ROUNDS_PER_INTERVAL));
    this.silentTicks = intervalTicks;
    if (heartbeatSeconds > 0) this.heartbeatTimer = setInterval(this.heartbeat, tickMs).unref();
  }

  /**
   * One tick's slice of the round: a whole round in one turn would stall every
   * send for as long as it takes to write to every stream. A heartbeat goes
   * only to a stream that nothing else was written to for the
   * interval: a message keeps a proxy's read timeout at bay as well, and
   * where messages flow, most heartbeats would be writes that nobody needs.
   */
  private readonly heartbeat = (): void => {
    const streams = this.heartbeatStreams!;
    const tick = ++this.tick;
    this.heartbeatRound ??= streams.values();
    let n = Math.ceil(streams.size / this.roundTicks);
    while (n-- > 0) {
      const next = this.heartbeatRound.next();
      if (next.done) {
        this.heartbeatRound = undefined;
        return;
      }
      if (tick - next.value.wroteAt >= this.silentTicks) next.value.write(HEARTBEAT);
    }
  };

  /** Stops the heartbeat timer. */
  close(): void {
    clearInterval(this.heartbeatTimer);
  }

  /** A message sent at `at` (epoch ms, sub-ms precision) was just queued; its write happens at the next flush. */
  noteSend(at: number): void {
    if (this.flushScheduled && this.onWritten) this.sentAt.push(at);
  }

  schedule(stream: HubStream): void {
    this.dirty.push(stream);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const batch = this.dirty;
    this.dirty = [];
    for (const stream of batch) stream.flush();
    if (this.sentAt.length > 0) {
      const now = epochMs();
      for (const at of this.sentAt) this.onWritten!(now - at);
      this.sentAt = [];
    }
  };
}

/**
 * A transport's framing with a memo of one: the router hands every recipient
 * of a send the same chunk, one recipient after another, so framing the last
 * chunk seen serves all the recipients of a send (per transport, not per
 * stream), with one reference held and no map to look up.
 */
export function framedOnce(frame: (chunk: Buffer) => Buffer): (chunk: Buffer) => Buffer {
  let lastChunk: Buffer | null = null;
  let lastFrame: Buffer | null = null;
  return (chunk) => {
    if (chunk !== lastChunk) {
      lastFrame = frame(chunk);
      lastChunk = chunk;
    }
    return lastFrame!;
  };
}

/** A stream's last id per partition, none yet (a stream that opened before its edge heard of partitions). */
export const positions = (hub: StreamHub): number[] => new Array<number>(hub.partitions).fill(0);

/**
 * A chunk of one partition among several against a stream's last id per partition: the stream's resume token after
 * it, or undefined when the stream has had it. The token is the stream's own, so such a chunk is framed per stream.
 */
export function advance(positions: number[], chunk: Chunk): string | undefined {
  const partition = chunk.partition!;
  if (chunk.id! <= (positions[partition] ?? 0)) return undefined;
  positions[partition] = chunk.id!;
  return formatToken(positions);
}

/**
 * The backlog rule of every transport: a stream whose unsent bytes would pass
 * the backlog is a slow consumer, but a stream with nothing unsent takes one
 * message whatever its size. A message's framing can exceed the backlog (SSE
 * adds `data: ` to each line), and every message the API accepts must reach a
 * reader that keeps up, or each resume would replay it and be cut again.
 */
export const overflows = (unsent: number, size: number, maxBacklog: number): boolean => unsent > 0 && unsent + size > maxBacklog;

/** A heartbeat: one empty line, which line-splitting clients skip. Other transports recognise it by identity and frame their own. */
export const HEARTBEAT = Buffer.from('\n');
const HEARTBEAT_TICK_MS = 100;
/** Rounds of visits per heartbeat interval: an idle stream's heartbeat comes at most a round (a tenth of the interval) late, and every round visits every stream. */
const ROUNDS_PER_INTERVAL = 10;

/**
 * uWebSockets.js's per-loop cork buffer (LoopData::CORK_BUFFER_SIZE). A write
 * that overflows a non-empty cork buffer takes uWS's `uncork(src)` path, which
 * (before uWebSockets 2026-04, including the build c1m uses) drops `src` when
 * flushing the corked bytes fails: the chunk's header goes out, its payload
 * never does, and the client's chunked stream is corrupt. That happens whenever
 * the kernel's send buffer is full while uWS holds nothing, common for a slow
 * reader. Writing uncorked would be safe, but that build prints a warning to
 * stderr for every uncorked write. So every corked group of chunks fits here
 * whole, and a message too large for it goes out as several HTTP chunks.
 */
export const CORK_BUFFER_SIZE = 16 * 1024;

/** A chunk's bytes with what uWS adds around it: CRLF, the length in hex, CRLF. Hex digits from the bit length: this runs for every write. */
const framed = (chunk: Buffer): number => chunk.length + 4 + (chunk.length < 16 ? 1 : (35 - Math.clz32(chunk.length)) >> 2);

/** The largest piece of a message whose chunk still fits the cork buffer (4 hex digits of length). */
const PIECE_SIZE = CORK_BUFFER_SIZE - 8;

/** Each chunk, or its pieces when it does not fit the cork buffer on its own; the same array, not a copy, when all fit (a flush of many streams allocates nothing). */
function pieces(chunks: readonly Buffer[]): readonly Buffer[] {
  for (let i = 0; i < chunks.length; i++) {
    if (framed(chunks[i]) > CORK_BUFFER_SIZE) {
      return chunks.flatMap((chunk) => Array.from({ length: Math.ceil(chunk.length / PIECE_SIZE) }, (_, i) => chunk.subarray(i * PIECE_SIZE, (i + 1) * PIECE_SIZE)));
    }
  }
  return chunks;
}

/**
 * What `writeGroup` writes, set right before res.cork() so a flush allocates
 * no closure: `one` chunk (the common case: one message since the last turn),
 * or chunks[from, to). One res.write() per chunk, straight to uWS.
 */
const group: { res: HttpResponse; one: Buffer | null; chunks: readonly Buffer[]; from: number; to: number; ok: boolean } = {
  res: null!,
  one: null,
  chunks: [],
  from: 0,
  to: 0,
  ok: true,
};
const NO_CHUNKS: readonly Buffer[] = [];
function writeGroup(): void {
  const res = group.res;
  if (group.one !== null) {
    group.ok = res.write(group.one);
    return;
  }
  let ok = true;
  for (let i = group.from; i < group.to; i++) ok = res.write(group.chunks[i]) && ok;
  group.ok = ok;
}
/** An empty cork still uncorks, and uWS's uncork first writes what it holds for the socket: the way to push a tail out from JS. */
function nothing(): void {}

/**
 * The chunked transport: one open `GET /test/<id>` response (and, through SseStream, `GET /sse/<id>`, a chunked
 * response too; WebSockets are WsStream's). Kept to a handful of fields: at a million streams these objects are the
 * server's main cost.
 *
 * What uWS tells us: `res.write` returns false when the socket did not take
 * everything (uWS keeps the rest and polls for writability); inside a cork, true
 * only means the bytes reached the cork buffer, and the uncork after it may
 * still leave a tail in uWS, which nobody reports to JS. Hence:
 * - from its first flush on, a stream keeps an onWritable handler, so uWS never
 *   drains a tail on its own (which arms its 10 s idle timeout and would close a
 *   healthy stream) but calls us, and we push the tail out with an empty cork
 *   even when nothing new is pending (uSockets stops polling after a writable
 *   event in which nothing was written);
 * - `held` is an upper bound of what uWS may hold for this stream, `queued`
 *   what waits in `pending`; their sum is capped at the hub's maxBacklog.
 */
export class ChunkedStream implements Connection {
  /** Chunks accepted but not yet handed to uWS: none, one, or several. */
  private pending: Buffer | Buffer[] | null = null;
  private queued = 0;
  private held = 0;
  private state = FRESH;
  /** The id of the last message written. */
  private lastId = 0;
  /** With several partitions, the last id of each instead (a field of its own: lastId stays a number on the one-partition path). */
  private lastIds: number[] | undefined;
  wroteAt: number;

  constructor(
    private readonly res: HttpResponse,
    protected readonly hub: StreamHub,
    readonly user: number,
    readonly topics: readonly string[] = NO_TOPICS,
  ) {
    this.counters.open++;
    this.wroteAt = hub.tick;
    hub.heartbeatStreams?.add(this);
  }

  /** This transport's counters; a prototype getter, so a subclass costs no field per stream. */
  get counters(): TransportCounters {
    return this.hub.transports.chunked;
  }

  get ended(): boolean {
    return this.state === CLOSED;
  }

  /** Plain /test/<id>: byte for byte the original's, no ids (see NumberedStream). */
  get numbered(): boolean {
    return false;
  }

  /** A resumed stream whose history is lost: a line saying so, first (see NumberedStream). */
  lost(why: string): void {
    this.queue(Buffer.from(`lost ${why}\n`));
  }

  /** A message once, in id order: one this stream has had (a new sequencer delivering its predecessor's last ones again) is skipped. */
  write(chunk: Chunk): number {
    if (chunk.id !== undefined) {
      if (chunk.partition !== undefined) {
        const token = advance((this.lastIds ??= positions(this.hub)), chunk);
        return token === undefined ? 0 : this.queue(this.frame(chunk, token));
      }
      if (chunk.id <= this.lastId) return 0;
      this.lastId = chunk.id;
    }
    return this.queue(this.frame(chunk));
  }

  /** Where the stream starts in each partition (a resume's, or a new stream's: see server/resume.ts). */
  startAt(start: number[]): void {
    this.lastIds = start.slice();
  }

  /** The bytes of a chunk on this transport: as they are on /test/<id>. `token` is the stream's resume token after it, where it is the stream's own (several partitions). */
  protected frame(chunk: Chunk, _token?: string): Buffer {
    return chunk;
  }

  /** What a chunk weighs on this stream, as framed: what a replay's budget counts. */
  framedSize(chunk: Chunk): number {
    return this.frame(chunk).length;
  }

  protected queue(chunk: Buffer): number {
    if (this.state >= CLOSING) return 0;
    // An open stream's `held` is stale until its next flush proves it (see flush()): count only what waits.
    if (overflows(this.queued + (this.state === BLOCKED ? this.held : 0), chunk.length, this.hub.maxBacklog)) {
      this.closeSlow();
      return 0;
    }
    this.queued += chunk.length;
    if (this.pending === null) {
      this.pending = chunk;
      if (this.state !== BLOCKED) this.hub.schedule(this);
    } else if (Array.isArray(this.pending)) {
      this.pending.push(chunk);
    } else {
      this.pending = [this.pending, chunk];
    }
    return 1;
  }

  /** Close later, from the hub's flush: write() runs inside a router send. */
  private closeSlow(): void {
    this.state = CLOSING;
    this.pending = null;
    this.hub.schedule(this);
  }

  flush(): void {
    if (this.state === CLOSING) {
      this.counters.slowConsumerCloses++;
      this.res.close(); // runs the onAborted handler, which logs the stream out
    } else if (this.state !== BLOCKED && this.pending !== null) {
      if (this.state === FRESH) {
        this.state = OPEN;
        this.res.onWritable(this.drained.bind(this));
      }
      this.writePending();
    }
  }

  /** Each message is its own HTTP chunk (several past CORK_BUFFER_SIZE); they go out in corked groups of at most CORK_BUFFER_SIZE, one syscall each. */
  private writePending(): void {
    const pending = this.pending;
    if (pending === null) return;
    // One message on a stream that held nothing proven: what queue() admitted whole, whatever its size.
    const alone = !Array.isArray(pending) && this.state === OPEN;
    const queued = this.queued;
    const counters = this.counters;
    counters.chunks += Array.isArray(pending) ? pending.length : 1;
    counters.bytes += queued;
    this.pending = null;
    this.queued = 0;
    this.wroteAt = this.hub.tick;
    group.res = this.res;
    group.ok = true;
    let last = Array.isArray(pending) ? 0 : framed(pending); // bytes of the last corked group: all an uncork that failed can leave behind once every write returned true
    if (last !== 0 && last <= CORK_BUFFER_SIZE) {
      group.one = pending as Buffer;
      this.res.cork(writeGroup);
      group.one = null;
    } else {
      const chunks = pieces(Array.isArray(pending) ? pending : [pending]);
      group.chunks = chunks;
      last = 0;
      for (let from = 0; from < chunks.length; ) {
        let size = framed(chunks[from]);
        let to = from + 1;
        while (to < chunks.length && size + framed(chunks[to]) <= CORK_BUFFER_SIZE) size += framed(chunks[to++]);
        group.from = from;
        group.to = to;
        this.res.cork(writeGroup);
        last = size;
        from = to;
      }
      group.chunks = NO_CHUNKS;
    }
    if (group.ok) {
      this.held = last;
    } else {
      // uWS may still hold everything it held before plus all of this flush.
      this.held += queued;
      this.state = BLOCKED;
      if (this.held > this.hub.maxBacklog && !alone) this.closeSlow();
    }
  }

  /** uWS onWritable: the socket can take more. Always writes, so that uWS's own tail for this stream moves too. */
  private drained(): boolean {
    if (this.state >= CLOSING) return true;
    this.state = OPEN;
    if (this.pending !== null) this.writePending();
    else this.res.cork(nothing); // `held` stays as it was: the next flush's writes tell whether the tail went
    return true;
  }

  /**
   * uWS onAborted: the client went away, or we closed it. uWS itself closes a
   * response whose socket stayed blocked for about 10 s: that, too, is a slow consumer.
   */
  aborted(): void {
    if (this.state === BLOCKED) this.counters.slowConsumerCloses++;
    this.forget();
    this.hub.registry.logout(this);
  }

  /**
   * Finishes the chunked response with its terminating chunk. Not end(_, true):
   * once the body has started, uWS writes that "Connection: close" header into
   * the body and corrupts the chunked encoding. The stream's headers already
   * say Connection: close, so the client hangs up (uWS's idle timeout drops one that does not).
   */
  close(): void {
    if (this.state === CLOSED) return;
    this.forget();
    this.res.cork(() => this.res.end());
  }

  private forget(): void {
    if (this.state !== CLOSED) this.counters.open--;
    this.hub.heartbeatStreams?.delete(this);
    this.state = CLOSED;
    this.pending = null;
  }
}

/**
 * `/test/<id>?ids=1` (or `?lastEventId=`): the chunked stream with each
 * message's id before it, `<id> <message>\n`, for clients that resume over
 * chunked streams. Without it the stream is byte for byte the original's.
 *
 * A message may hold line breaks, and a line of its own must never read as
 * another message's id: each CR or LF in a message is followed by a space, so
 * every line after a message's first starts with one, which no id line
 * (digits), `lost` line or heartbeat (empty) does, however a reader splits
 * lines (LF, CR or CRLF). numberedMessages() undoes it.
 */
export class NumberedStream extends ChunkedStream {
  override get numbered(): boolean {
    return true;
  }

  protected override frame(chunk: Chunk, token?: string): Buffer {
    if (chunk === HEARTBEAT || chunk.id === undefined) return chunk;
    return token === undefined ? numbered(chunk) : numberedAs(chunk, token);
  }
}

const numbered = framedOnce((chunk: Chunk) => numberedAs(chunk, chunk.id!));
function numberedAs(chunk: Chunk, token: number | string): Buffer {
  const message = chunk.subarray(0, chunk.length - 1);
  const id = Buffer.from(`${token} `);
  if (message.indexOf(LF) === -1 && message.indexOf(CR) === -1) return Buffer.concat([id, chunk]);
  const framed = Buffer.allocUnsafe(id.length + 2 * message.length + 1);
  let at = id.copy(framed);
  for (const byte of message) {
    framed[at++] = byte;
    if (byte === LF || byte === CR) framed[at++] = CONTINUED;
  }
  framed[at++] = LF;
  return framed.subarray(0, at);
}
const CR = 0x0d;
const LF = 0x0a;
const CONTINUED = 0x20;

/** A numbered stream's lines (split at LF) back into messages: `<id> <message>`, `lost <why>` or '' (a heartbeat). */
export function numberedMessages(lines: string[]): string[] {
  const messages: string[] = [];
  for (const line of lines) {
    if (line.startsWith(' ') && messages.length > 0) messages[messages.length - 1] += `\n${line}`;
    else messages.push(line);
  }
  return messages.map((message) => message.replace(/([\r\n]) /g, '$1'));
}
