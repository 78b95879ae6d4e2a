import { parseId, reply } from './http.js';
import { PAGE } from './page.js';
import { CometStream, type StreamHub } from './stream.js';
import type { TemplatedApp } from './uws.js';

export interface CometOptions {
  maxUserId: number;
  /** Streams beyond this are refused with 503 instead of running the process out of file descriptors. */
  maxConnections: number;
}

const STREAM_HEADERS: [string, string][] = [
  ['Content-Type', 'text/html; charset=utf-8'],
  ['Cache-Control', 'no-cache'],
  ['X-Accel-Buffering', 'no'], // tell nginx-style proxies not to buffer the stream
];

/** The public listener: the comet streams at /test/<id> and the watch page at /. */
export function cometRoutes(app: TemplatedApp, hub: StreamHub, options: CometOptions): TemplatedApp {
  return app
    .get('/test/:id', (res, req) => {
      const text = req.getParameter(0);
      const id = parseId(text);
      if (id === null) return reply(res, 404, `not a user id: '${text}', try /test/123\n`);
      if (id > options.maxUserId) return reply(res, 503, `user id ${id} is above this server's limit of ${options.maxUserId}\n`);
      if (hub.open >= options.maxConnections) {
        return reply(res, 503, `server full: ${hub.open} connections\n`, undefined, true);
      }
      if (hub.registry.connectionsOf(id) >= hub.registry.maxPerUser) {
        return reply(res, 429, `user ${id} already holds ${hub.registry.maxPerUser} streams\n`, undefined, true);
      }
      const stream = new CometStream(res, hub, id);
      res.onAborted(stream.aborted.bind(stream)); // a bound method weighs less than a closure, per connection
      res.writeStatus('200 OK');
      for (const [name, value] of STREAM_HEADERS) res.writeHeader(name, value);
      res.write(`Welcome, Url: '/test/${id}' Id: ${id}\n`);
      hub.registry.login(stream);
    })
    .get('/', (res) => reply(res, 200, PAGE, 'text/html; charset=utf-8'))
    .any('/*', (res, req) => reply(res, 404, `no such page: ${req.getUrl()}, try /test/123\n`));
}
