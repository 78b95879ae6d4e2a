import { checkStreamToken } from './auth.js';
import { parseId, reply } from './http.js';
import { PAGE } from './page.js';
import { BROWSER_CLIENT } from './browser-client.js';
import { SSE_HEADERS, SseStream, sseWelcome } from './sse.js';
import { lastEventId, resume } from './resume.js';
import { CometStream, NumberedStream, type StreamHub, type Transport } from './stream.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';
import { protocolToken, upgradeWs, wsBehavior, WsStream } from './ws.js';

export interface CometOptions {
  maxUserId: number;
  /** Streams beyond this are refused with 503 instead of running the process out of file descriptors. */
  maxConnections: number;
  /**
   * Content type of the streams: 'text' (default: text/plain, never rendered,
   * so messages carrying user content cannot inject script) or 'html' (the
   * original's text/html, for clients that need it).
   */
  contentType?: 'text' | 'html';
  /** When set, every stream needs a token for its id signed with this secret (see auth.ts): ?token=, or for WebSockets also Sec-WebSocket-Protocol. */
  streamSecret?: string;
}

const streamHeaders = (contentType: 'text' | 'html'): [string, string][] => [
  ['Content-Type', `text/${contentType === 'html' ? 'html' : 'plain'}; charset=utf-8`],
  ['X-Content-Type-Options', 'nosniff'],
  ['Cache-Control', 'no-cache'],
  ['X-Accel-Buffering', 'no'], // tell nginx-style proxies not to buffer the stream
  ['Connection', 'close'], // a stream ends with its connection (see CometStream.close)
];

/**
 * The public listener: the streams of every transport (chunked at /test/<id>,
 * EventSource at /sse/<id>, WebSocket at /ws/<id>), the browser client at
 * /c1m.js and the watch page at /. Every transport is admitted by the same
 * checks and shares the hub, the registry and the limits.
 */
export function cometRoutes(app: TemplatedApp, hub: StreamHub, options: CometOptions): TemplatedApp {
  const headers = streamHeaders(options.contentType ?? 'text');
  const secret = options.streamSecret;

  /** The user id of a stream request that may open, or null once it has been answered with why not. */
  const admit = (res: HttpResponse, req: HttpRequest, transport: Transport, token: string): number | null => {
    const refuse = (status: number, why: string, close = false): null => {
      reply(res, status, `${why}\n`, undefined, close);
      return null;
    };
    const text = req.getParameter(0);
    const id = parseId(text);
    // No such stream, and retrying will not make one: 404 for both. 503 only means "full, retry later".
    if (id === null) return refuse(404, `not a user id: '${text}', try ${ROUTES[transport]}123`);
    if (id > options.maxUserId) return refuse(404, `no stream for user id ${id}: this server's ids go up to ${options.maxUserId}`);
    if (secret !== undefined) {
      const refused = token === '' ? 'this stream needs ?token=<token for this id>' : checkStreamToken(secret, id, token);
      if (refused !== null) {
        hub.transports[transport].authFailures++;
        return refuse(token === '' ? 401 : 403, refused);
      }
    }
    if (hub.open >= options.maxConnections) return refuse(503, `server full: ${hub.open} connections`, true);
    if (hub.registry.connectionsOf(id) >= hub.registry.maxPerUser) return refuse(429, `user ${id} already holds ${hub.registry.maxPerUser} streams`, true);
    return id;
  };

  return app
    .get('/test/:id', (res, req) => {
      const id = admit(res, req, 'chunked', req.getQuery('token') ?? '');
      if (id === null) return;
      const after = lastEventId(req.getQuery('lastEventId'), req.getHeader('last-event-id'));
      // Ids are opt-in here: without them the stream is byte for byte the original's.
      const stream = after !== undefined || req.getQuery('ids') === '1' ? new NumberedStream(res, hub, id) : new CometStream(res, hub, id);
      res.onAborted(stream.aborted.bind(stream)); // a bound method weighs less than a closure, per connection
      res.writeStatus('200 OK');
      for (const [name, value] of headers) res.writeHeader(name, value);
      res.write(`Welcome, Url: '/test/${id}' Id: ${id}\n`);
      resume(hub, stream, after);
    })
    .get('/sse/:id', (res, req) => {
      const id = admit(res, req, 'sse', req.getQuery('token') ?? '');
      if (id === null) return;
      // EventSource sends Last-Event-ID by itself when it reconnects; other clients may use the query.
      const after = lastEventId(req.getQuery('lastEventId'), req.getHeader('last-event-id'));
      const stream = new SseStream(res, hub, id);
      res.onAborted(stream.aborted.bind(stream));
      res.writeStatus('200 OK');
      for (const [name, value] of SSE_HEADERS) res.writeHeader(name, value);
      res.write(sseWelcome(id));
      resume(hub, stream, after);
    })
    .ws(
      '/ws/:id',
      wsBehavior(hub, (res, req, context) => {
        const { token, protocol } = protocolToken(req.getHeader('sec-websocket-protocol'));
        const id = admit(res, req, 'ws', req.getQuery('token') || token);
        if (id !== null) upgradeWs(res, req, context, new WsStream(hub, id, lastEventId(req.getQuery('lastEventId'))), protocol);
      }),
    )
    // A plain GET of a WebSocket path: uWS passes requests without an upgrade on to here.
    .get('/ws/:id', (res) => reply(res, 426, 'this is a WebSocket stream: connect with new WebSocket(url)\n'))
    .get('/c1m.js', (res) => reply(res, 200, BROWSER_CLIENT, 'text/javascript; charset=utf-8'))
    .get('/', (res) => reply(res, 200, PAGE, 'text/html; charset=utf-8'))
    .any('/*', (res, req) => reply(res, 404, `no such page: ${req.getUrl()}, try /test/123\n`));
}

/** Where each transport's streams are, for the hints in refusals. */
const ROUTES: Record<Transport, string> = { chunked: '/test/', sse: '/sse/', ws: '/ws/' };
