import { checkStreamToken, tokenScope } from './auth.js';
import { originCheck, PREFLIGHT } from './cors.js';
import { bearer, NO_HEADERS, parseId, reply, type Headers } from './http.js';
import { PAGE } from './page.js';
import { BROWSER_CLIENT } from './browser-client.js';
import { SSE_HEADERS, SseStream, sseWelcome } from './sse.js';
import { lastEventId, resume } from './resume.js';
import { ChunkedStream, NumberedStream, type StreamHub, type Transport } from './stream.js';
import { parseTopics } from './topics.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';
import { protocolToken, upgradeWs, wsBehavior, WsStream } from './ws.js';

export interface CometOptions {
  maxUserId: number;
  /** Streams beyond this are refused with 503 instead of running the process out of file descriptors. */
  maxStreams: number;
  /**
   * Content type of the streams: 'text' (default: text/plain, never rendered,
   * so messages carrying user content cannot inject script) or 'html' (the
   * original's text/html, for clients that need it).
   */
  contentType?: 'text' | 'html';
  /** When set, every stream needs a token for its id signed with this secret (see auth.ts): ?token=, `Authorization: Bearer`, or for WebSockets also Sec-WebSocket-Protocol. */
  streamSecret?: string;
  /** Other sites whose pages may use the streams and /c1m.js (CORS, WebSocket Origin): origins, or '*'. See originCheck. */
  allowOrigin?: readonly string[];
}

const streamHeaders = (contentType: 'text' | 'html'): [string, string][] => [
  ['Content-Type', `text/${contentType === 'html' ? 'html' : 'plain'}; charset=utf-8`],
  ['X-Content-Type-Options', 'nosniff'],
  ['Cache-Control', 'no-cache'],
  ['X-Accel-Buffering', 'no'], // tell nginx-style proxies not to buffer the stream
  ['Connection', 'close'], // a stream ends with its connection (see ChunkedStream.close)
];

/**
 * The public listener: the streams of every transport (chunked at /test/<id>,
 * EventSource at /sse/<id>, WebSocket at /ws/<id>), the browser client at
 * /c1m.js and the watch page at /. Every transport is admitted by the same
 * checks and shares the hub, the registry and the limits.
 */
export function cometRoutes(app: TemplatedApp, hub: StreamHub, options: CometOptions): TemplatedApp {
  const headers = streamHeaders(options.contentType ?? 'text');
  const cors = corsCheck(originCheck(options.allowOrigin));
  const preflight = preflightAnswer(cors);
  const admit = (res: HttpResponse, req: HttpRequest, transport: Transport, token: string, allowed: Headers) => admitStream(hub, options, res, req, transport, token, allowed);

  return app
    .get('/test/:id', (res, req) => {
      const allowed = cors(res, req);
      if (allowed === null) return;
      const admitted = admit(res, req, 'chunked', token(req), allowed);
      if (admitted === null) return;
      const { id, topics } = admitted;
      const after = lastEventId(req.getQuery('lastEventId'), req.getHeader('last-event-id'));
      // Ids are opt-in here: without them the stream is byte for byte the original's.
      const stream = after !== undefined || req.getQuery('ids') === '1' ? new NumberedStream(res, hub, id, topics) : new ChunkedStream(res, hub, id, topics);
      res.onAborted(stream.aborted.bind(stream)); // a bound method weighs less than a closure, per connection
      res.writeStatus('200 OK');
      for (const [name, value] of headers) res.writeHeader(name, value);
      for (const [name, value] of allowed) res.writeHeader(name, value);
      res.write(`Welcome, Url: '/test/${id}' Id: ${id}\n`);
      resume(hub, stream, after);
    })
    .get('/sse/:id', (res, req) => {
      const allowed = cors(res, req);
      if (allowed === null) return;
      const admitted = admit(res, req, 'sse', token(req), allowed);
      if (admitted === null) return;
      const { id, topics } = admitted;
      // EventSource sends Last-Event-ID by itself when it reconnects; other clients may use the query.
      const after = lastEventId(req.getQuery('lastEventId'), req.getHeader('last-event-id'));
      const stream = new SseStream(res, hub, id, topics);
      res.onAborted(stream.aborted.bind(stream));
      res.writeStatus('200 OK');
      for (const [name, value] of SSE_HEADERS) res.writeHeader(name, value);
      for (const [name, value] of allowed) res.writeHeader(name, value);
      res.write(sseWelcome(id));
      resume(hub, stream, after);
    })
    .ws(
      '/ws/:id',
      wsBehavior(hub, (res, req, context) => {
        // uWS upgrades whatever has a 24-character Sec-WebSocket-Key; RFC 6455 §4.4 wants 426 for another version.
        if (req.getHeader('sec-websocket-version') !== '13') return reply(res, 426, 'this server speaks WebSocket version 13\n', undefined, false, UPGRADE);
        if (cors(res, req) === null) return;
        const offer = protocolToken(req.getHeader('sec-websocket-protocol'));
        if (typeof offer === 'string') return reply(res, 400, `${offer}\n`);
        const admitted = admit(res, req, 'ws', token(req) || offer.token, NO_HEADERS);
        if (admitted !== null) upgradeWs(res, req, context, new WsStream(hub, admitted.id, lastEventId(req.getQuery('lastEventId')), admitted.topics, admitted.scope), offer.protocol);
      }),
    )
    // A plain GET of a WebSocket path: uWS passes requests without an upgrade on to here.
    .get('/ws/:id', (res) => reply(res, 426, 'this is a WebSocket stream: connect with new WebSocket(url)\n', undefined, false, UPGRADE))
    .get('/c1m.js', (res, req) => {
      const allowed = cors(res, req);
      if (allowed !== null) reply(res, 200, BROWSER_CLIENT, 'text/javascript; charset=utf-8', false, allowed);
    })
    // CORS preflights: a cross-origin GET with a header of its own (Last-Event-ID, Authorization) asks first.
    .options('/test/:id', preflight)
    .options('/sse/:id', preflight)
    .options('/c1m.js', preflight)
    .get('/', (res) => reply(res, 200, PAGE, 'text/html; charset=utf-8'))
    .any('/*', (res, req) => reply(res, 404, `no such page: ${req.getUrl()}, try /test/123\n`));
}

/** The CORS headers for a request, or null once it has been refused for its origin. */
function corsCheck(checkOrigin: ReturnType<typeof originCheck>) {
  return (res: HttpResponse, req: HttpRequest): Headers | null => {
    const origin = req.getHeader('origin');
    const allowed = checkOrigin(origin, req.getHeader('host'));
    if (allowed === null) reply(res, 403, `pages from ${origin} may not use this server: it is not in --allow-origin\n`);
    return allowed;
  };
}

/** The answer to a CORS preflight: 204 with the allowed origin's headers. */
function preflightAnswer(cors: ReturnType<typeof corsCheck>) {
  return (res: HttpResponse, req: HttpRequest): void => {
    const allowed = cors(res, req);
    if (allowed !== null) res.cork(() => {
      res.writeStatus('204 No Content');
      for (const [name, value] of [...allowed, ...PREFLIGHT]) res.writeHeader(name, value);
      res.endWithoutBody();
    });
  };
}

/** The user id and topics of a stream request that may open, or null once it has been answered with why not. */
function admitStream(hub: StreamHub, options: CometOptions, res: HttpResponse, req: HttpRequest, transport: Transport, token: string, cors: Headers): Admitted | null {
  const secret = options.streamSecret;
  const refuse = (status: number, why: string, close = false): null => {
    reply(res, status, `${why}\n`, undefined, close, status === 401 ? [...cors, CHALLENGE] : cors);
    return null;
  };
  const text = req.getParameter(0);
  const id = parseId(text);
  // No such stream, and retrying will not make one: 404 for both. 503 only means "full, retry later".
  if (id === null) return refuse(404, `not a user id: '${text}', try ${ROUTES[transport]}123`);
  if (id > options.maxUserId) return refuse(404, `no stream for user id ${id}: this server's ids go up to ${options.maxUserId}`);
  const topics = parseTopics(req.getQuery('topics') ?? '');
  if (!Array.isArray(topics)) return refuse(400, topics.refused);
  if (secret !== undefined) {
    const refused = token === '' ? 'this stream needs ?token=<token for this id> (or Authorization: Bearer <token>)' : checkStreamToken(secret, id, token, Date.now(), topics);
    if (refused !== null) {
      hub.transports[transport].authFailures++;
      return refuse(token === '' ? 401 : 403, refused);
    }
  }
  if (hub.open >= options.maxStreams) return refuse(503, `server full: ${hub.open} connections`, true);
  if (hub.registry.connectionsOf(id) >= hub.registry.maxPerUser) return refuse(429, `user ${id} already holds ${hub.registry.maxPerUser} streams`, true);
  // The scope stays with a WebSocket, whose client may subscribe to more topics while it is open.
  return { id, topics: hub.registry.intern(topics), scope: secret === undefined ? undefined : tokenScope(token) };
}

/** A stream request that may open: its user, and the topics it listens to while open. */
interface Admitted {
  id: number;
  topics: readonly string[];
  /** What its token lets it listen to; undefined when the server asks for no token. */
  scope: readonly string[] | undefined;
}

/** The token of a stream request: ?token=, or `Authorization: Bearer` for clients that can set headers (kept out of URLs that proxies log). */
const token = (req: HttpRequest): string => req.getQuery('token') || (bearer(req.getHeader('authorization')) ?? '');

/** A 401's challenge (RFC 9110 §11.6.1): the scheme a token may also come in. */
const CHALLENGE = ['WWW-Authenticate', 'Bearer realm="c1m"'] as const;

/** A 426's headers (RFC 9110 §15.5.22, RFC 6455 §4.4). */
const UPGRADE: Headers = [
  ['Upgrade', 'websocket'],
  ['Sec-WebSocket-Version', '13'],
];

/** Where each transport's streams are, for the hints in refusals. */
const ROUTES: Record<Transport, string> = { chunked: '/test/', sse: '/sse/', ws: '/ws/' };
