/**
 * EventSource streams at `GET /sse/<id>`: the framing of the text/event-stream
 * format. The stream itself is a chunked HTTP response like `/test/<id>`, so
 * it is a ChunkedStream (batching, corked writes, backlog, slow consumers) whose
 * chunks are framed as events on their way in.
 */
import type { Chunk } from '../router/router.js';
import { ChunkedStream, framedOnce, HEARTBEAT, type TransportCounters } from './stream.js';

export const SSE_HEADERS: [string, string][] = [
  ['Content-Type', 'text/event-stream; charset=utf-8'],
  ['Cache-Control', 'no-cache'],
  ['X-Accel-Buffering', 'no'], // nginx: do not buffer the stream
  ['Connection', 'close'], // a stream ends with its connection (see ChunkedStream.close)
];

/** EventSource's own reconnect waits `retry` ms; each stream gets a random one in this range, so a restarted server is not hit by all its plain EventSource clients at once. */
const RETRY_MS: [number, number] = [1000, 5000];

/** The opening event: a reconnect hint, then a `welcome` event naming the stream. */
export function sseWelcome(id: number): string {
  const retry = RETRY_MS[0] + Math.floor(Math.random() * (RETRY_MS[1] - RETRY_MS[0]));
  return `retry: ${retry}\nevent: welcome\ndata: Welcome, Url: '/sse/${id}' Id: ${id}\n\n`;
}

const PREFIX = Buffer.from('data: ');
const SUFFIX = Buffer.from('\n\n');
/** The heartbeat is a comment line: EventSource ignores it, and the bytes still find a dead peer. */
const COMMENT = Buffer.from(':\n');
const CR = 0x0d;
const LF = 0x0a;

/**
 * A router chunk (a message and its '\n') as one event: `data: <line>\n` per
 * line, then an empty line. CR, LF and CRLF all end a line in this format, so
 * each becomes a new `data:` line and no payload can end the event early or
 * start a field of its own. A message id (or the stream's token, see
 * NumberedStream) goes in an `id:` line before the data lines.
 */
function sseEvent(chunk: Chunk, token: number | string | undefined = chunk.id): Buffer {
  if (chunk === HEARTBEAT) return COMMENT;
  const message = chunk.subarray(0, chunk.length - 1);
  // The id first: EventSource keeps it, and sends it back as Last-Event-ID when it reconnects.
  const id = token === undefined ? '' : `id: ${token}\n`;
  if (message.indexOf(LF) === -1 && message.indexOf(CR) === -1) return Buffer.concat([Buffer.from(id), PREFIX, message, SUFFIX]);
  const lines = message.toString('utf8').split(/\r\n|\r|\n/);
  return Buffer.from(`${id}data: ${lines.join('\ndata: ')}\n\n`);
}

const framed = framedOnce(sseEvent);

export class SseStream extends ChunkedStream {
  override get counters(): TransportCounters {
    return this.hub.transports.sse;
  }

  /** Every event shows its id, where there are ids. */
  override get numbered(): boolean {
    return true;
  }

  protected override frame(chunk: Chunk, token?: string): Buffer {
    return token === undefined ? framed(chunk) : sseEvent(chunk, token);
  }

  override lost(why: string): void {
    this.queue(Buffer.from(`event: lost\ndata: ${why}\n\n`));
  }
}
