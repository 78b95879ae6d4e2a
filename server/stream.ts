import type { Connection, Registry } from '../router/registry.js';
import type { HttpResponse } from './uws.js';

const OPEN = 0;
/** uWS holds unsent bytes; new chunks wait in `pending` until the socket drains. */
const BLOCKED = 1;
/** Over the backlog limit: closed at the next flush, never written again. */
const CLOSING = 2;
const CLOSED = 3;

/**
 * Shared by all streams of one server: batches writes so that every chunk a
 * connection received during one event-loop turn goes out in a single corked
 * write (many sends fanning out to the same users cost one syscall per user,
 * not one per message), and keeps the counters.
 */
export class StreamHub {
  /** Streams open now. */
  open = 0;
  chunks = 0;
  bytes = 0;
  slowConsumerCloses = 0;
  /** Told, at each flush, how long each message noted with noteSend() took from its send to its write (ms). */
  onWritten?: (ms: number) => void;
  private dirty: CometStream[] = [];
  private flushScheduled = false;
  private sentAt: number[] = [];

  constructor(
    readonly registry: Registry,
    readonly maxBacklog: number,
  ) {}

  /** A message sent at `at` (epoch ms, sub-ms precision) was just queued; its write happens at the next flush. */
  noteSend(at: number): void {
    if (this.flushScheduled && this.onWritten) this.sentAt.push(at);
  }

  schedule(stream: CometStream): void {
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

/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes on one host. */
export const epochMs = (): number => performance.timeOrigin + performance.now();

/** The stream whose pending chunks `writeCorked` writes; set right before res.cork() so a flush allocates no closure. */
let corked: CometStream;
function writeCorked(): void {
  corked.writePending();
}

/**
 * One open `GET /test/<id>` response. Kept to a handful of fields: at a
 * million connections these objects are the server's main cost.
 */
export class CometStream implements Connection {
  /** Chunks accepted but not yet handed to uWS: none, one, or several. */
  private pending: Buffer | Buffer[] | null = null;
  /**
   * Bytes accepted since the socket last took everything we gave it: an upper
   * bound on what this stream holds in uWS's buffer and in `pending`.
   */
  private backlog = 0;
  private state = OPEN;

  constructor(
    private readonly res: HttpResponse,
    private readonly hub: StreamHub,
    readonly user: number,
  ) {
    hub.open++;
  }

  write(chunk: Buffer): number {
    if (this.state >= CLOSING) return 0;
    this.backlog += chunk.length;
    // Only a blocked socket is a slow consumer: what an open one queued this turn goes out at the flush.
    if (this.state === BLOCKED && this.backlog > this.hub.maxBacklog) {
      // Close later, from the flush: this call comes from inside a router send.
      this.state = CLOSING;
      this.pending = null;
      this.hub.schedule(this);
      return 0;
    }
    if (this.pending === null) {
      this.pending = chunk;
      if (this.state === OPEN) this.hub.schedule(this);
    } else if (Array.isArray(this.pending)) {
      this.pending.push(chunk);
    } else {
      this.pending = [this.pending, chunk];
    }
    return 1;
  }

  flush(): void {
    if (this.state === CLOSING) {
      this.hub.slowConsumerCloses++;
      this.res.close(); // runs the onAborted handler, which logs the stream out
    } else if (this.state === OPEN && this.pending !== null) {
      corked = this;
      this.res.cork(writeCorked);
    }
  }

  /** Each chunk stays its own HTTP chunk; cork makes them one syscall. */
  writePending(): void {
    const pending = this.pending;
    if (pending === null) return;
    this.pending = null;
    let ok = true;
    if (Array.isArray(pending)) {
      for (const chunk of pending) ok = this.writeChunk(chunk) && ok;
    } else {
      ok = this.writeChunk(pending);
    }
    if (ok) {
      this.backlog = 0;
    } else if (this.state === OPEN) {
      this.state = BLOCKED;
      this.res.onWritable(() => this.drained());
    }
  }

  private writeChunk(chunk: Buffer): boolean {
    this.hub.chunks++;
    this.hub.bytes += chunk.length;
    return this.res.write(chunk);
  }

  /**
   * uWS: the socket can take more. The backlog is only cleared by a write that
   * goes through whole, so a consumer that drains slower than we fill stays counted.
   */
  private drained(): boolean {
    if (this.state !== BLOCKED) return true;
    this.state = OPEN;
    if (this.pending !== null) this.writePending(); // already corked inside a uWS callback
    return this.state === OPEN;
  }

  /**
   * uWS onAborted: the client went away, or we closed it. uWS itself closes a
   * response whose socket stayed blocked for about 10 s: that, too, is a slow consumer.
   */
  aborted(): void {
    if (this.state === BLOCKED) this.hub.slowConsumerCloses++;
    this.forget();
    this.hub.registry.logout(this);
  }

  /** Finishes the chunked response cleanly and drops the connection. */
  close(): void {
    if (this.state === CLOSED) return;
    this.forget();
    this.res.cork(() => this.res.end(undefined, true));
  }

  private forget(): void {
    if (this.state !== CLOSED) this.hub.open--;
    this.state = CLOSED;
    this.pending = null;
  }
}
