import { checkStreamToken } from './auth.js';
import { parseId, reply } from './http.js';
import { PAGE } from './page.js';
import { CometStream, type StreamHub } from './stream.js';
import type { TemplatedApp } from './uws.js';

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
  /** When set, /test/<id> needs a token for that id signed with this secret (see auth.ts). */
  streamSecret?: string;
}

const streamHeaders = (contentType: 'text' | 'html'): [string, string][] => [
  ['Content-Type', `text/${contentType === 'html' ? 'html' : 'plain'}; charset=utf-8`],
  ['X-Content-Type-Options', 'nosniff'],
  ['Cache-Control', 'no-cache'],
  ['X-Accel-Buffering', 'no'], // tell nginx-style proxies not to buffer the stream
  ['Connection', 'close'], // a stream ends with its connection (see CometStream.close)
];

/** The public listener: the comet streams at /test/<id> and the watch page at /. */
export function cometRoutes(app: TemplatedApp, hub: StreamHub, options: CometOptions): TemplatedApp {
  const headers = streamHeaders(options.contentType ?? 'text');
  const secret = options.streamSecret;
  return app
    .get('/test/:id', (res, req) => {
      const text = req.getParameter(0);
      const id = parseId(text);
      // No such stream, and retrying will not make one: 404 for both. 503 only means "full, retry later".
      if (id === null) return reply(res, 404, `not a user id: '${text}', try /test/123\n`);
      if (id > options.maxUserId) return reply(res, 404, `no stream for user id ${id}: this server's ids go up to ${options.maxUserId}\n`);
      if (secret !== undefined) {
        const token = req.getQuery('token') ?? '';
        const refused = token === '' ? 'this stream needs ?token=<token for this id>' : checkStreamToken(secret, id, token);
        if (refused !== null) {
          hub.authFailures++;
          return reply(res, token === '' ? 401 : 403, `${refused}\n`);
        }
      }
      if (hub.open >= options.maxConnections) {
        return reply(res, 503, `server full: ${hub.open} connections\n`, undefined, true);
      }
      if (hub.registry.connectionsOf(id) >= hub.registry.maxPerUser) {
        return reply(res, 429, `user ${id} already holds ${hub.registry.maxPerUser} streams\n`, undefined, true);
      }
      const stream = new CometStream(res, hub, id);
      res.onAborted(stream.aborted.bind(stream)); // a bound method weighs less than a closure, per connection
      res.writeStatus('200 OK');
      for (const [name, value] of headers) res.writeHeader(name, value);
      res.write(`Welcome, Url: '/test/${id}' Id: ${id}\n`);
      hub.registry.login(stream);
    })
    .get('/', (res) => reply(res, 200, PAGE, 'text/html; charset=utf-8'))
    .any('/*', (res, req) => reply(res, 404, `no such page: ${req.getUrl()}, try /test/123\n`));
}
