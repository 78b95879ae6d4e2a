import type { HttpResponse } from './uws.js';

const STATUS: Record<number, string> = {
  200: '200 OK',
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

/** Sends a complete response; corked because it may run after the request handler returned. */
export function reply(res: HttpResponse, status: number, body: string, contentType = 'text/plain; charset=utf-8', close = false): void {
  res.cork(() => {
    res.writeStatus(STATUS[status] ?? String(status)).writeHeader('Content-Type', contentType).end(body, close);
  });
}

export function replyJson(res: HttpResponse, status: number, value: unknown, close = false): void {
  reply(res, status, JSON.stringify(value), 'application/json', close);
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
 * malloc'd ArrayBuffer per request off the API path. A body over the limit is
 * answered with 413 and the connection is closed, so the rest of it is never read.
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
