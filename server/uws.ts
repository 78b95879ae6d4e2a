import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

export type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket, us_socket_context_t, WebSocket, WebSocketBehavior } from 'uWebSockets.js';
export type Uws = typeof UWS;

/**
 * Loads uWebSockets.js and insists on its native build. The package quietly
 * swaps in a pure-JS server when the binary does not load (or when
 * UWS_USE_FALLBACK is set); that server is far too slow and heavy for c1m.
 */
export function loadNativeUws(): Uws {
  const uws = createRequire(import.meta.url)('uWebSockets.js') as Uws;
  if (!Function.prototype.toString.call(uws.App).includes('[native code]')) {
    throw new Error(
      'uWebSockets.js fell back to its pure-JS implementation (native binary not loaded for ' +
        `node ${process.version} abi ${process.versions.modules} ${process.platform}-${process.arch}` +
        (process.env.UWS_USE_FALLBACK ? ', UWS_USE_FALLBACK is set' : '') +
        '); c1m refuses to run on it.',
    );
  }
  return uws;
}
