import { timingSafeEqual } from 'node:crypto';
import { unpack } from 'msgpackr';
import { NotKeptError, SendError, type Sent } from '../router/router.js';
import { errorCode } from '../subsmanager/errors.js';
import { NotSequencerError } from '../subsmanager/history.js';
import { toPairs, type Pair } from '../subsmanager/pairs.js';
import { parseSubject, type Subject } from '../subsmanager/subjects.js';
import { StoreUnavailableError, type ReplicatedSubscriptionStore, type SubscriptionStore } from '../subsmanager/store.js';
import type { Registry as MetricsRegistry } from 'prom-client';
import { DEFAULTS } from './defaults.js';
import { bearer, closeUnread, HttpError, readBody, reply, replyJson } from './http.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

export interface ApiOptions {
  maxUserId: number;
  /** Largest accepted request body, in bytes. */
  maxBody: number;
  /** Largest message POST /send accepts, in bytes (default DEFAULTS.maxMessage); larger ones get 413. */
  maxMessage?: number;
  /** When set, every request must carry `Authorization: Bearer <token>` (the scheme in any case). */
  token?: string;
  /** Served at GET /metrics (Prometheus text format). */
  metrics: MetricsRegistry;
}

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host);

/** Refuses settings that would expose the API or let one message overflow a stream's backlog. */
export function checkApiSettings(s: { apiHost: string; token?: string; apiInsecure?: boolean; maxMessage: number; maxBacklog: number }): void {
  if (s.maxMessage > s.maxBacklog) throw new Error(`max message (${s.maxMessage} bytes) must not exceed max backlog (${s.maxBacklog} bytes)`);
  if (!s.token && !s.apiInsecure && !isLoopback(s.apiHost)) {
    throw new Error(`refusing to serve the backend API on ${s.apiHost} without a token: set --token (C1M_TOKEN), or --api-insecure if the network is trusted`);
  }
}

type Handler = (res: HttpResponse, req: HttpRequest) => void;

/**
 * The backend API: a separate listener for trusted applications (send,
 * subscriptions, stats). It is never mounted on the public port. `send` gets
 * the message in uWS's receive memory, valid only until it returns: it copies
 * what it keeps (the router builds its chunk), see readBody.
 */
export function apiRoutes(
  app: TemplatedApp,
  /**
   * Returns once the message is kept, where the process keeps a history; or a promise of it, where another process
   * takes the send (a cluster router passing it to its partition's leader), answered when that one answers.
   */
  send: (subject: Subject, message: Uint8Array, key?: string) => Sent | Promise<Sent>,
  /** A replicated store answers its writes later (once applied here): so do these routes. */
  store: SubscriptionStore | ReplicatedSubscriptionStore,
  stats: () => object,
  options: ApiOptions,
): TemplatedApp {
  const guarded = tokenGuard(options.token);
  const withBody = (handle: BodyHandler, limit = options.maxBody) => bodyReader(handle, limit);
  const subjectParam = (text: string) => pathSubject(text, options.maxUserId);
  const userParam = (text: string) => pathUser(text, options.maxUserId);

  return app
    .post(
      '/send/:id',
      guarded(
        withBody((body, _type, [id], key) => {
          // The message's size and the key's form are the router's checks (checkSend, sentBefore), as for every way in.
          // An empty header is no key: uWS reads a missing header as ''.
          return send(subjectParam(id), body, key === '' ? undefined : key);
        }, options.maxMessage ?? DEFAULTS.maxMessage),
      ),
    )
    .post('/subscriptions', guarded(withBody((body, type) => counted('added', store.addSubscriptions(parsePairs(body, type, options.maxUserId))))))
    .del('/subscriptions', guarded(withBody((body, type) => counted('removed', store.removeSubscriptions(parsePairs(body, type, options.maxUserId))))))
    .get('/subscribers/:subject', guarded((res, req) => replyJson(res, 200, store.getSubscribers(subjectParam(req.getParameter(0))))))
    .get('/subscriptions/:user', guarded((res, req) => replyJson(res, 200, store.getSubscriptions(userParam(req.getParameter(0))))))
    .get('/stats', guarded((res) => replyJson(res, 200, stats())))
    .get(
      '/metrics',
      guarded((res) => {
        res.onAborted(() => (res.aborted = true));
        options.metrics.metrics().then(
          (text) => !res.aborted && reply(res, 200, text, options.metrics.contentType),
          (err: Error) => !res.aborted && replyJson(res, 500, { error: err.message }),
        );
      }),
    )
    .any('/*', (res, req) => replyJson(res, 404, { error: `no such endpoint: ${req.getMethod().toUpperCase()} ${req.getUrl()}` }));
}

type BodyHandler = (body: Buffer, contentType: string, params: string[], idempotencyKey: string) => unknown;

/** Wraps a handler with the bearer token check (none without a token) and turns thrown errors into JSON error responses. */
function tokenGuard(token: string | undefined): (handler: Handler) => Handler {
  const expected = token ? Buffer.from(token) : null;
  return (handler) => (res, req) => {
    if (expected) {
      const given = Buffer.from(bearer(req.getHeader('authorization')) ?? '');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        const challenge = given.length === 0 ? 'Bearer realm="c1m"' : 'Bearer realm="c1m", error="invalid_token"'; // RFC 6750 §3
        return replyJson(res, 401, { error: 'missing or wrong bearer token' }, closeUnread(req), [['WWW-Authenticate', challenge]]);
      }
    }
    respondOrFail(res, () => handler(res, req));
  };
}

/** Reads the body, then answers with what `handle` returns. Headers are read now: `req` dies with the handler. */
function bodyReader(handle: BodyHandler, limit: number): Handler {
  return (res, req) => {
    const declared = Number(req.getHeader('content-length') || 0);
    // Answered before the body is read, so a client that waits for `100 Continue` need not send it; the rest is dropped (closeUnread).
    if (declared > limit) return replyJson(res, 413, { error: `body larger than ${limit} bytes` }, closeUnread(req));
    const contentType = req.getHeader('content-type');
    const params = [req.getParameter(0) ?? ''];
    const idempotencyKey = req.getHeader('idempotency-key');
    readBody(res, limit, (body) => {
      if (res.aborted) return;
      respondOrFail(res, () => {
        const answer = handle(body, contentType, params, idempotencyKey);
        if (!(answer instanceof Promise)) return replyJson(res, 200, answer);
        answer.then(
          (value) => !res.aborted && replyJson(res, 200, value),
          (err: Error) =>
            !res.aborted &&
            respondOrFail(res, () => {
              throw err;
            }),
        );
      });
    });
  };
}

/** A subject in a path (`5`, `user:5`, `photo:789`, `:` may come as %3A): users up to maxUserId, as POST /subscriptions takes them. */
function pathSubject(text: string, maxUserId: number): Subject {
  let decoded: string;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    throw new HttpError(400, `not a subject: '${text}' (bad percent-encoding)`);
  }
  try {
    return parseSubject(decoded, maxUserId);
  } catch (err) {
    throw new HttpError(400, (err as Error).message);
  }
}

function pathUser(text: string, maxUserId: number): number {
  const subject = pathSubject(text, maxUserId);
  if (typeof subject !== 'number') throw new HttpError(400, `not a user: '${text}' (subscriptions are held by users)`);
  return subject;
}

/** `{ added: n }` or `{ removed: n }`, now or once a replicated store has applied the write. */
function counted(key: 'added' | 'removed', count: number | Promise<number>): object {
  return count instanceof Promise ? count.then((n) => ({ [key]: n })) : { [key]: count };
}

function respondOrFail(res: HttpResponse, respond: () => void): void {
  try {
    respond();
  } catch (err) {
    if (err instanceof HttpError || err instanceof SendError) replyJson(res, err.status, { error: err.message });
    // Another process (a bulk load) held the store's write lock past the busy timeout: nothing was written.
    else if (errorCode(err) === 'SQLITE_BUSY') replyJson(res, 503, { error: `store busy, nothing changed; retry: ${(err as Error).message}` });
    // A replicated store's stream did not take the write, or this router has not applied it yet: the message says which.
    else if (err instanceof StoreUnavailableError) replyJson(res, 503, { error: err.message });
    // The history's lease is another process's (routers handing over): nothing was numbered or delivered.
    else if (err instanceof NotSequencerError) replyJson(res, 503, { error: `${err.message}: try again` });
    // A replicated history's stream did not acknowledge the message: it may be sent again.
    else if (err instanceof NotKeptError) replyJson(res, 503, { error: err.message });
    else replyJson(res, 500, { error: (err as Error).message });
  }
}

/** Content types read as JSON: the real one, plus the defaults of `curl -d` and of fetch() with a string body. */
const JSON_TYPES = new Set(['', 'application/json', 'text/plain', 'application/x-www-form-urlencoded']);

/** A pair list as JSON or msgpack; anything else is refused before the store sees it. */
function parsePairs(body: Buffer, contentType: string, maxUserId: number): Pair[] {
  const type = contentType.split(';')[0].trim().toLowerCase();
  let value: unknown;
  if (JSON_TYPES.has(type)) {
    try {
      value = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new HttpError(400, `malformed JSON: ${(err as Error).message}`);
    }
  } else if (type === 'application/msgpack' || type === 'application/x-msgpack') {
    try {
      value = unpack(body);
    } catch (err) {
      throw new HttpError(400, `malformed msgpack: ${(err as Error).message}`);
    }
  } else {
    throw new HttpError(415, `unsupported content type '${type}': use application/json or application/msgpack`);
  }
  try {
    return toPairs(value, maxUserId);
  } catch (err) {
    throw new HttpError(400, (err as Error).message);
  }
}
