/**
 * What real clients and hostile strangers send, byte for byte: the answers
 * they must get. Add the next stranger's tries here.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { mintStreamToken } from '../server/auth.js';
import { DISCARD_BYTES } from '../server/http.js';
import { MAX_CLIENT_FRAME } from '../server/ws.js';
import { RawClient, startServer, WsClient } from './helpers.js';
import { until } from '../bench/until.js';

const SECRET = 'a stream secret of thirty-two bytes or more';
const TOKEN = 'an api token';

let c1m: C1m | undefined;
const raws: RawClient[] = [];
afterEach(() => {
  raws.splice(0).forEach((r) => r.close());
  c1m?.close();
  c1m = undefined;
});
const raw = (port: number, request?: string | Buffer): RawClient => {
  const client = new RawClient(port, request);
  raws.push(client);
  return client;
};
const get = (port: number, path: string, headers: Record<string, string> = {}) => fetch(`http://127.0.0.1:${port}${path}`, { headers, signal: AbortSignal.timeout(5000) });

/** One whole HTTP/1.1 response at the end of what came back: its status, headers (lower case) and body. */
const RESPONSE = /HTTP\/1\.1 (\d{3})[^\r]*\r\n((?:[^\r]+\r\n)*)\r\n/g;
function responses(text: string): { status: number; headers: string }[] {
  return [...text.matchAll(RESPONSE)].map((m) => ({ status: Number(m[1]), headers: m[2].toLowerCase() }));
}

describe('authentication', () => {
  it('the API answers 401 with a Bearer challenge, and takes the scheme in any case', async () => {
    c1m = await startServer({ token: TOKEN });
    const missing = await get(c1m.apiPort, '/stats');
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toBe('Bearer realm="c1m"');
    const wrong = await get(c1m.apiPort, '/stats', { authorization: 'Bearer nope' });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('www-authenticate')).toBe('Bearer realm="c1m", error="invalid_token"');
    for (const scheme of ['Bearer', 'bearer', 'BEARER']) expect((await get(c1m.apiPort, '/stats', { authorization: `${scheme} ${TOKEN}` })).status, scheme).toBe(200);
    expect((await get(c1m.apiPort, '/stats', { authorization: `Basic ${TOKEN}` })).status).toBe(401);
  });

  it('a stream answers 401 with a Bearer challenge on every transport, and takes its token as Authorization: Bearer', async () => {
    c1m = await startServer({ streamSecret: SECRET });
    for (const path of ['/test/7', '/sse/7']) {
      const res = await get(c1m.port, path);
      expect(res.status, path).toBe(401);
      expect(res.headers.get('www-authenticate'), path).toBe('Bearer realm="c1m"');
    }
    const ws = await WsClient.open(c1m.port, 7);
    expect(ws.status).toBe(401);
    expect(ws.headers.toLowerCase()).toContain('www-authenticate: bearer realm="c1m"');
    ws.close();

    const res = await get(c1m.port, '/test/7', { authorization: `bearer ${mintStreamToken(SECRET, 7, 60)}` });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toBe("Welcome, Url: '/test/7' Id: 7\n");
    await reader.cancel();
  });
});

describe('a request body that is refused', () => {
  const over = 100_000; // above the default --max-message (64 KiB)
  // More than uWS reads at once (512 KiB), as a client sends it: in several reads, the first answered before the rest arrives.
  const long = 2 * 1024 * 1024;
  const send = (length: number, extra = '') => `POST /send/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${length}\r\n${extra}\r\n`;

  it('is read and dropped: the client that sends it whole reads the 413, and the connection serves the next request', async () => {
    c1m = await startServer();
    // httpx and requests write the whole body before they read: closing unread resets the connection under them.
    const client = raw(c1m.apiPort, Buffer.concat([Buffer.from(send(long)), Buffer.alloc(long, 'x'), Buffer.from('GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')]));
    await client.until(/"uptimeSeconds"/, 'the 413, then the next request answered');
    expect(responses(client.text).map((r) => r.status)).toEqual([413, 200]);
    expect(client.text).toContain('{"error":"body larger than 65536 bytes"}');
    expect(client.error).toBeUndefined();
  });

  it('refused for its token is read and dropped too', async () => {
    c1m = await startServer({ token: TOKEN });
    const client = raw(c1m.apiPort, Buffer.concat([Buffer.from(send(long)), Buffer.alloc(long, 'x'), Buffer.from(`GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`)]));
    await client.until(/"uptimeSeconds"/, 'the 401, then the next request answered');
    expect(responses(client.text).map((r) => r.status)).toEqual([401, 200]);
    expect(client.error).toBeUndefined();
  });

  it('with Expect: 100-continue is answered 413 before the body is sent, and the body sent anyway is dropped', async () => {
    c1m = await startServer();
    const client = raw(c1m.apiPort, send(over, 'Expect: 100-continue\r\n'));
    await client.until(/body larger than/, 'the 413 without the body');
    // uWebSockets.js writes `100 Continue` itself before any handler runs (its route wrapper); the 413 follows in the same write.
    expect(responses(client.text).map((r) => r.status)).toEqual([100, 413]);
    // A client that took the 100 as a go-ahead (curl does) sends its body: dropped, and the connection goes on.
    client.write(Buffer.concat([Buffer.alloc(over, 'x'), Buffer.from("GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")]));
    await client.until(/"uptimeSeconds"/, 'the next request answered');
    expect(client.error).toBeUndefined();
  });

  it('past the discard bound, or of unknown length, is answered and the connection closed', async () => {
    c1m = await startServer({ token: TOKEN });
    const auth = `Authorization: Bearer ${TOKEN}\r\n`;
    const huge = raw(c1m.apiPort, send(DISCARD_BYTES + 1, auth));
    await huge.until(/body larger than/, 'the 413');
    await until('the connection closed', () => huge.ended);
    expect(responses(huge.text)[0].headers).toContain('connection: close');

    const chunked = (headers: string) => raw(c1m!.apiPort, `POST /send/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n${headers}\r\n${over.toString(16)}\r\n${'x'.repeat(over)}\r\n`);
    const tooLong = chunked(auth);
    await tooLong.until(/body larger than/, 'the 413');
    await until('the connection closed', () => tooLong.ended);
    const unauthorized = chunked('');
    await unauthorized.until(/bearer token/, 'the 401');
    await until('the connection closed', () => unauthorized.ended);
  });
});

describe('WebSocket handshake and frames', () => {
  const upgrade = (path: string, headers: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${headers}\r\n`;

  it('a bad or missing Sec-WebSocket-Version gets 426 naming version 13', async () => {
    c1m = await startServer();
    for (const version of ['', 'Sec-WebSocket-Version: 8\r\n', 'Sec-WebSocket-Version: 13a\r\n']) {
      const client = raw(c1m.port, upgrade('/ws/5', version));
      const [head] = await client.until(/^HTTP\/1\.1 .*?\r\n\r\n/s, `the answer to version '${version}'`);
      expect(head, version).toMatch(/^HTTP\/1\.1 426 /);
      expect(head.toLowerCase(), version).toContain('sec-websocket-version: 13\r\n');
    }
    expect(c1m.registry.connections).toBe(0);
  });

  it('a subprotocol offer without c1m is refused with 400 saying what to offer; the token is never echoed', async () => {
    c1m = await startServer({ streamSecret: SECRET });
    const token = mintStreamToken(SECRET, 5, 60);
    for (const offer of [`token.${token}`, 'chat']) {
      const client = await WsClient.open(c1m.port, 5, '', offer);
      expect(client.status, offer).toBe(400);
      expect(client.body, offer).toContain("['c1m', 'token.' + token]");
      expect(client.headers + client.body).not.toContain(token);
      client.close();
    }
    const client = await WsClient.open(c1m.port, 5, '', `c1m, token.${token}`);
    expect(client.status).toBe(101);
    expect(client.headers).toContain('Sec-WebSocket-Protocol: c1m\r\n');
    expect(client.headers).not.toContain(token);
    client.close();
  });

  /** A masked client frame of any length up to 64 KiB. */
  const frame = (opcode: number, payload: Buffer): Buffer => {
    const mask = Buffer.from([1, 2, 3, 4]);
    const length = payload.length < 126 ? Buffer.from([0x80 | payload.length]) : Buffer.from([0x80 | 126, payload.length >> 8, payload.length & 0xff]);
    return Buffer.concat([Buffer.from([0x80 | opcode]), length, mask, payload.map((b, i) => b ^ mask[i % 4])]);
  };

  it('a client data frame over 512 bytes gets the documented close code 1003, up to MAX_CLIENT_FRAME', async () => {
    c1m = await startServer();
    for (const size of [10, 1000, MAX_CLIENT_FRAME]) {
      const client = await WsClient.open(c1m.port, 5);
      client.socket.write(frame(0x1, Buffer.alloc(size, 'x')));
      await until(`a close after a ${size}-byte frame`, () => client.closeCode !== undefined || client.ended);
      expect(client.closeCode, `a ${size}-byte frame`).toBe(1003);
      client.close();
    }
  });

  it('a longer frame is cut by uWebSockets.js without reading it: no close frame', async () => {
    c1m = await startServer();
    const client = await WsClient.open(c1m.port, 5);
    client.socket.write(frame(0x1, Buffer.alloc(MAX_CLIENT_FRAME + 1, 'x')));
    await until('the socket cut', () => client.ended);
    expect(client.closeCode).toBeUndefined();
  });
});
