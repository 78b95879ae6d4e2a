/**
 * The stream state machine against a model of uWebSockets.js's HttpResponse:
 * a port of AsyncSocket::write/uncork, HttpResponse::write/cork and the
 * HttpContext writable handler of the uWebSockets build c1m loads, with a
 * kernel that takes as many bytes as the test allows. It makes the cases a real
 * socket cannot be made to hit on demand (an uncork that fails after the writes
 * fit the cork buffer; a writable event with nothing new pending) deterministic.
 */
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Registry } from '../router/registry.js';
import { ChunkedStream, CORK_BUFFER_SIZE, StreamHub } from '../server/stream.js';
import type { HttpResponse } from '../server/uws.js';

/** uWS's HTTP_TIMEOUT_S / HTTP_IDLE_TIMEOUT_S. */
const TIMEOUT_S = 10;

class FakeResponse {
  /** What the kernel accepted, in order. */
  readonly sent: Buffer[] = [];
  /** Bytes the kernel takes before its send buffer is full. */
  room = Infinity;
  /** uWS's per-socket backpressure buffer. */
  buffer = Buffer.alloc(0);
  /** The seconds of the socket's timeout; 0 = none. */
  timeout = 0;
  pollWritable = false;
  closed = false;
  private corked = false;
  private cork_: Buffer[] = [];
  private corkOffset = 0;
  private lastWriteFailed = false;
  private onWritableHandler?: (offset: number) => boolean;
  private onAbortedHandler?: () => void;

  private sys(data: Buffer): number {
    if (this.closed) throw new Error('write to a closed socket');
    const n = Math.min(this.room, data.length);
    this.room -= n;
    this.sent.push(data.subarray(0, n));
    if (n < data.length) {
      this.lastWriteFailed = true;
      this.pollWritable = true;
    }
    return n;
  }

  /** AsyncSocket::write. */
  private asyncWrite(src: Buffer, optionally = false): [number, boolean] {
    if (this.buffer.length) {
      const written = this.sys(this.buffer);
      if (written < this.buffer.length) {
        this.buffer = this.buffer.subarray(written);
        if (optionally) return [0, true];
        this.buffer = Buffer.concat([this.buffer, src]);
        return [src.length, true];
      }
      this.buffer = Buffer.alloc(0);
    }
    if (src.length) {
      if (this.corked) {
        if (CORK_BUFFER_SIZE - this.corkOffset >= src.length) {
          this.cork_.push(Buffer.from(src));
          this.corkOffset += src.length;
        } else {
          return this.uncork(src, optionally);
        }
      } else {
        const written = this.sys(src);
        if (written < src.length) {
          if (optionally) return [written, true];
          this.buffer = Buffer.concat([this.buffer, src.subarray(written)]);
          return [src.length, true];
        }
      }
    }
    return [src.length, false];
  }

  /** AsyncSocket::uncork, as in the build c1m uses: `src` is lost when the corked bytes fail to flush. */
  private uncork(src = Buffer.alloc(0), optionally = false): [number, boolean] {
    if (!this.corked) return [0, false];
    this.corked = false;
    if (this.corkOffset) {
      const corked = Buffer.concat(this.cork_);
      this.cork_ = [];
      this.corkOffset = 0;
      const [, failed] = this.asyncWrite(corked);
      if (failed) return [0, true];
    }
    return this.asyncWrite(src, optionally);
  }

  /** Writes made outside a cork: the uWS build c1m uses prints a warning to stderr for each. */
  uncorkedWrites = 0;
  /** Calls into uWS, each a crossing from JavaScript to C++ (a cork's is two: its callback comes back into JavaScript). */
  corks = 0;
  writes = 0;

  write(chunk: Buffer): boolean {
    this.writes++;
    if (!this.corked) this.uncorkedWrites++;
    this.asyncWrite(Buffer.from('\r\n'));
    this.asyncWrite(Buffer.from(chunk.length.toString(16)));
    this.asyncWrite(Buffer.from('\r\n'));
    const [, failed] = this.asyncWrite(chunk);
    if (failed) this.timeout = TIMEOUT_S;
    return !failed;
  }

  cork(handler: () => void): this {
    this.corks++;
    if (this.corked) {
      handler();
      return this;
    }
    this.corked = true;
    handler();
    if (!this.corked) return this;
    const [, failed] = this.uncork();
    if (failed) this.timeout = TIMEOUT_S;
    return this;
  }

  onWritable(handler: (offset: number) => boolean): this {
    this.onWritableHandler = handler;
    return this;
  }

  onAborted(handler: () => void): this {
    this.onAbortedHandler = handler;
    return this;
  }

  close(): this {
    this.closed = true;
    this.onAbortedHandler?.();
    return this;
  }

  end(): this {
    this.closed = true;
    return this;
  }

  /** The client reads `n` bytes; the event loop then reports writability if uSockets polls for it. */
  read(n = Infinity): void {
    this.room = n;
    if (!this.pollWritable) return;
    this.lastWriteFailed = false;
    if (this.onWritableHandler) {
      this.timeout = 0;
      this.onWritableHandler(0);
    } else {
      this.asyncWrite(Buffer.alloc(0), true);
      this.timeout = TIMEOUT_S;
    }
    if (!this.lastWriteFailed) this.pollWritable = false;
  }

  /** The HTTP chunks the client can parse out of what was sent. */
  chunks(): string[] {
    let text = Buffer.concat(this.sent).toString('latin1');
    const out: string[] = [];
    for (;;) {
      const match = /^\r\n([0-9a-f]+)\r\n/.exec(text);
      if (!match) break;
      const size = parseInt(match[1], 16);
      if (text.length < match[0].length + size) break;
      out.push(text.slice(match[0].length, match[0].length + size));
      text = text.slice(match[0].length + size);
    }
    if (text.length > 0 && !/^\r\n[0-9a-f]*(\r\n)?$/.test(text)) throw new Error(`corrupt chunked stream at: ${JSON.stringify(text.slice(0, 40))}`);
    return out;
  }
}

const setup = (maxBacklog = 256 * 1024) => {
  const registry = new Registry();
  const hub = new StreamHub(registry, maxBacklog);
  const res = new FakeResponse();
  const stream = new ChunkedStream(res as unknown as HttpResponse, hub, 1);
  res.onAborted(() => stream.aborted());
  registry.login(stream);
  return { hub, res, stream, registry };
};
const message = (n: number, fill = 'x') => Buffer.from(fill.repeat(n));

describe('ChunkedStream against uWS write semantics', () => {
  it('costs one cork per stream and flush, and one write per chunk, however many chunks fit the cork buffer', async () => {
    const { res, stream } = setup();
    stream.write(message(100, 'a')); // the first flush also sets the onWritable handler
    await tick();
    expect([res.corks, res.writes]).toEqual([1, 1]);
    const sent = Array.from({ length: 10 }, (_, i) => message(1000, String.fromCharCode(98 + i)));
    for (const m of sent) stream.write(m); // one event-loop turn: one flush
    await tick();
    expect([res.corks, res.writes]).toEqual([2, 11]); // 10 chunks of 1,000 bytes: one cork buffer
    for (const m of sent) stream.write(m);
    stream.write(message(10_000, 'z')); // past the cork buffer with the others: a second group
    await tick();
    expect([res.corks, res.writes]).toEqual([4, 22]);
    expect(res.chunks()).toEqual(['a'.repeat(100), ...sent, ...sent, message(10_000, 'z')].map(String));
  });

  it('pushes out the tail uWS holds when the socket drains with nothing new pending', async () => {
    const { res, stream } = setup();
    res.room = 1000;
    stream.write(message(20_000)); // two cork buffers' worth: the second write comes back short
    await tick();
    expect(res.buffer.length).toBeGreaterThan(0);
    res.read();
    expect(res.buffer.length).toBe(0);
    expect(res.chunks().join('')).toBe('x'.repeat(20_000));
  });

  it('keeps a stream whose uncork came back short after every write fit the cork buffer: no idle timeout armed once drained', async () => {
    const { res, stream, hub } = setup();
    res.room = 100;
    expect(stream.write(message(1000))).toBe(1);
    await tick();
    expect(res.timeout).toBe(TIMEOUT_S); // uWS armed its timeout on the failed uncork
    res.read();
    expect(res.chunks()).toEqual(['x'.repeat(1000)]);
    expect(res.timeout).toBe(0); // else uWS closes this healthy stream 10 s later
    stream.write(message(10, 'y'));
    await tick();
    expect(res.chunks()).toEqual(['x'.repeat(1000), 'y'.repeat(10)]);
    expect(hub.slowConsumerCloses).toBe(0);
  });

  it('never loses a chunk when several coalesced chunks overflow the cork buffer against a nearly full socket', async () => {
    const { res, stream } = setup();
    res.room = 5000;
    const sent = ['a', 'b', 'c', 'd'].map((fill) => message(12 * 1024, fill));
    for (const m of sent) stream.write(m);
    await tick();
    for (let i = 0; i < 10 && (res.buffer.length > 0 || res.pollWritable); i++) res.read(20_000);
    expect(res.chunks()).toEqual(sent.map((m) => m.toString()));
  });

  it('writes a message larger than the cork buffer whole, as consecutive chunks, in order with the others', async () => {
    const { res, stream } = setup();
    res.room = 7;
    const sent = [message(10, 'a'), message(40 * 1024, 'b'), message(10, 'c')];
    for (const m of sent) stream.write(m);
    await tick();
    for (let i = 0; i < 20 && (res.buffer.length > 0 || res.pollWritable); i++) res.read(10_000);
    const chunks = res.chunks();
    expect(chunks.join('')).toBe(sent.join(''));
    expect(chunks[0]).toBe('a'.repeat(10));
    expect(chunks.at(-1)).toBe('c'.repeat(10));
    expect(res.uncorkedWrites).toBe(0);
  });

  it('never loses a large message that meets a full kernel buffer while uWS holds nothing (a slow reader)', async () => {
    const { res, stream } = setup();
    res.room = 1000 + 9; // the first message fills the kernel exactly: nothing left in uWS
    stream.write(message(1000, 'a'));
    await tick();
    expect(res.buffer.length).toBe(0);
    stream.write(message(20_000, 'b'));
    await tick();
    for (let i = 0; i < 10 && (res.buffer.length > 0 || res.pollWritable); i++) res.read(8000);
    expect(res.chunks().join('')).toBe('a'.repeat(1000) + 'b'.repeat(20_000));
    expect(res.uncorkedWrites).toBe(0);
  });

  it('a blocked stream that drains receives every byte queued meanwhile, in order', async () => {
    const { res, stream } = setup();
    res.room = 0;
    const sent = Array.from({ length: 20 }, (_, i) => message(3000, String.fromCharCode(97 + i)));
    for (const m of sent.slice(0, 10)) stream.write(m);
    await tick();
    for (const m of sent.slice(10)) stream.write(m);
    await tick();
    res.read();
    res.read();
    expect(res.chunks()).toEqual(sent.map((m) => m.toString()));
  });

  it('a message racing a disconnect is dropped, never written to the closed response', async () => {
    const { res, stream, registry, hub } = setup();
    expect(stream.write(message(10))).toBe(1);
    res.close(); // the abort lands between queueing and the flush
    await tick();
    expect(res.sent).toEqual([]);
    expect(registry.connections).toBe(0);
    expect(hub.open).toBe(0);
    expect(stream.write(message(10))).toBe(0);
  });

  it('counts what uWS may hold: a stream that stops reading is closed once queued plus held passes the backlog', async () => {
    const { res, stream, hub } = setup(64 * 1024);
    res.room = 0;
    let accepted = 0;
    for (let i = 0; i < 10; i++) {
      accepted += stream.write(message(16 * 1024));
      await tick();
    }
    expect(accepted).toBeLessThanOrEqual(4);
    expect(res.closed).toBe(true);
    expect(hub.slowConsumerCloses).toBe(1);
    expect(hub.open).toBe(0);
  });

  it('caps a burst to one stream within one event-loop turn, before any of it reaches uWS', async () => {
    const { res, stream, hub } = setup(64 * 1024);
    let accepted = 0;
    for (let i = 0; i < 10; i++) accepted += stream.write(message(16 * 1024));
    expect(accepted).toBe(4);
    await tick();
    expect(res.sent).toEqual([]);
    expect(res.closed).toBe(true);
    expect(hub.slowConsumerCloses).toBe(1);
  });

  it('closes at once when one blocked flush may leave more than the backlog in uWS, with no later write', async () => {
    const { res, stream, hub } = setup(64 * 1024);
    stream.write(message(10_000)); // goes out whole; uWS may still hold this flush's last corked group
    await tick();
    res.room = 0; // the client stops reading
    let accepted = 0;
    for (let i = 0; i < 4; i++) accepted += stream.write(message(16_000));
    expect(accepted).toBe(4); // under the backlog as queued: an open stream's held bytes are unproven until a flush
    await tick(); // the flush comes back short: what uWS may hold is now over the backlog
    await tick(); // the close that flush scheduled
    expect(res.closed).toBe(true);
    expect(hub.slowConsumerCloses).toBe(1);
    expect(hub.open).toBe(0);
  });
});
