import type { HttpRequest, HttpResponse } from './uws.js';

const STATUS: Record<number, string> = {
  200: '200 OK',
  204: '204 No Content',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  426: '426 Upgrade Required',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

/** A positive decimal integer up to 2^53-1, without sign, spaces or leading zeros; else null. */
export function parseId(text: string): number | null {
  if (!/^[1-9][0-9]{0,15}$/.test(text)) return null;
  const id = Number(text);
  return Number.isSafeInteger(id) ? id : null;
}

/** Response headers beyond the status line and Content-Type. */
export type Headers = readonly (readonly [string, string])[];
export const NO_HEADERS: Headers = [];

/** Sends a complete response; corked because it may run after the request handler returned. */
export function reply(res: HttpResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8', close = false, headers = NO_HEADERS): void {
  res.cork(() => {
    res.writeStatus(STATUS[status] ?? String(status)).writeHeader('Content-Type', contentType);
    for (const [name, value] of headers) res.writeHeader(name, value);
    res.end(body, close);
  });
}

export function replyJson(res: HttpResponse, status: number, value: unknown, close = false, headers = NO_HEADERS): void {
  reply(res, status, JSON.stringify(value), 'application/json', close, headers);
}

/** The credentials of `Authorization: Bearer <credentials>`, the scheme in any case (RFC 9110 §11.1), or null. */
export function bearer(authorization: string): string | null {
  const match = /^bearer +(.+)$/is.exec(authorization);
  return match ? match[1] : null;
}

/**
 * Body bytes a refused request may still send: uWS reads and drops the body
 * of a request answered before it arrived, and the connection stays open.
 * Closing instead, with the body unread, makes the kernel answer the rest with
 * a reset, and a client still sending (httpx, requests) gets a broken pipe
 * instead of the answer (RFC 9112 §9.6). Past this bound, or when the length is
 * unknown (chunked), the answer goes out and the connection is closed.
 */
export const DISCARD_BYTES = 4 * 1024 * 1024;

/** Whether a request answered without its body must close the connection (see DISCARD_BYTES). Read in the handler: `req` dies with it. */
export function closeUnread(req: HttpRequest): boolean {
  return req.getHeader('transfer-encoding') !== '' || Number(req.getHeader('content-length') || 0) > DISCARD_BYTES;
}

/** Thrown by API handlers for a client error with a status and a message for the caller. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Collects a request body of at most `limit` bytes, then calls `done` with it
 * from inside uWS's data callback. The Buffer is valid only until `done`
 * returns (uWS reuses that memory), so `done` copies whatever it keeps: a send
 * copies the message once, into its chunk. A body that arrives in one piece,
 * as a message usually does, is therefore never copied here, which keeps a
 * malloc'd ArrayBuffer per request off the API path. A body found over the
 * limit here has no declared length (a longer declared one is refused before
 * reading, see closeUnread): it is answered with 413 and the connection closed.
 */
export function readBody(res: HttpResponse, limit: number, done: (body: Buffer) => void): void {
  let parts: Buffer[] | null = null;
  let size = 0;
  res.onAborted(() => {
    res.aborted = true;
  });
  res.onData((data, isLast) => {
    if (size > limit) return;
    size += data.byteLength;
    if (size > limit) {
      replyJson(res, 413, { error: `body larger than ${limit} bytes` }, true);
      return;
    }
    if (isLast && parts === null) return done(Buffer.from(data));
    (parts ??= []).push(Buffer.from(data.slice(0)));
    if (isLast) done(Buffer.concat(parts));
  });
}
