/**
 * Which other sites' pages may use the public port (`--allow-origin`): CORS
 * on the streams and /c1m.js, and the `Origin` check of a WebSocket upgrade,
 * which has no CORS of its own (cross-site WebSocket hijacking).
 */
import { NO_HEADERS, type Headers } from './http.js';

/** Checks an --allow-origin list: each entry is `*` or an origin exactly as a browser sends it. */
export function checkAllowOrigin(list: readonly string[]): void {
  for (const entry of list) {
    if (entry === '*') continue;
    let origin = 'null';
    try {
      origin = new URL(entry).origin;
    } catch {
      // reported below
    }
    // 'null' is the origin of every sandboxed frame and file:// page: allowing it would allow them all.
    if (origin === 'null') throw new Error(`--allow-origin: '${entry}' is not an origin: give scheme://host[:port] (e.g. https://app.example.com), or *`);
    if (origin !== entry) throw new Error(`--allow-origin: '${entry}' is not an origin as browsers send it: use '${origin}'`);
  }
}

/** The CORS headers for a request from `origin`, or null when that origin may not use the streams. */
export type OriginCheck = (origin: string, host: string) => Headers | null;

const VARY: Headers = [['Vary', 'Origin']];
const ANY: Headers = [['Access-Control-Allow-Origin', '*'], ...VARY];

/**
 * Without a list: no CORS headers and no check, so browsers keep other sites'
 * pages from reading the streams (same-origin only) but not from opening a
 * WebSocket. With one: a request without Origin (not a browser) or from the
 * server's own origin is served as before; a listed origin gets CORS with
 * credentials (c1m reads no cookie, the token is in the URL, so they only
 * matter to a proxy in front, for origins the operator named); `*` lets any
 * origin in without credentials; any other origin is refused with 403.
 */
export function originCheck(list: readonly string[] = []): OriginCheck {
  if (list.length === 0) return () => NO_HEADERS;
  checkAllowOrigin(list);
  const listed = new Map(list.filter((o) => o !== '*').map((o): [string, Headers] => [o, [['Access-Control-Allow-Origin', o], ['Access-Control-Allow-Credentials', 'true'], ...VARY]]));
  const any = list.includes('*');
  return (origin, host) => {
    if (origin === '' || origin.slice(origin.indexOf('://') + 3) === host) return VARY;
    return listed.get(origin) ?? (any ? ANY : null);
  };
}

/** A preflight's answer beyond the origin's headers: what a cross-origin GET of a stream may carry. */
export const PREFLIGHT: Headers = [
  ['Access-Control-Allow-Methods', 'GET'],
  ['Access-Control-Allow-Headers', 'Authorization, Last-Event-ID, Cache-Control'],
  ['Access-Control-Max-Age', '600'],
];
