/**
 * --allow-origin: a page served on another origin (another loopback port)
 * in headless Chromium uses the streams, /c1m.js and the browser client when
 * its origin is allowed, and cannot when it is not; the headers themselves
 * over plain HTTP.
 */
import http from 'node:http';
import type { Browser, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { spawnCluster } from '../loadgen/server-process.js';
import { launchChromium, RawClient, runCli, startServer, stopChild } from './helpers.js';
import { until } from '../bench/until.js';

let browser: Browser;
/** The application's own server: a blank page on another origin than c1m's. */
let app: http.Server;
let appOrigin: string;

beforeAll(async () => {
  app = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>app</title>'));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appOrigin = `http://127.0.0.1:${(app.address() as { port: number }).port}`;
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  app?.close();
});

let c1m: C1m | undefined;
let page: Page | undefined;
const raws: RawClient[] = [];
afterEach(async () => {
  await page?.close();
  page = undefined;
  raws.splice(0).forEach((r) => r.close());
  c1m?.close();
  c1m = undefined;
});

/** What a page on the application's origin gets from c1m: each way in, as 'ok: <what came>' or 'failed: <why>'. */
async function tryFromApp(port: number): Promise<Record<string, string>> {
  page = await browser.newPage();
  await page.goto(`${appOrigin}/`);
  // A string, not a function: vitest would rewrite the function's import() into a helper the page does not have.
  return page.evaluate(`(${IN_PAGE})('http://127.0.0.1:${port}')`) as Promise<Record<string, string>>;
}

/** Runs in the page: each way in, as 'ok: <what came>' or 'failed: <why>'. */
const IN_PAGE = `async (base) => {
  const within = (promise) => Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 10000))]);
  const outcome = (promise) => within(promise).then((v) => 'ok: ' + v, (e) => 'failed: ' + (e.message || e));
  const firstChunk = async (init) => {
    const res = await fetch(base + '/test/2', init);
    const reader = res.body.getReader();
    const text = new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    return text.trim();
  };
  return {
    eventSource: await outcome(new Promise((resolve, reject) => {
      const source = new EventSource(base + '/sse/1');
      source.addEventListener('welcome', (e) => (source.close(), resolve(e.data)));
      source.onerror = () => (source.close(), reject(new Error('error event')));
    })),
    fetch: await outcome(firstChunk()),
    // A header of its own makes it preflighted (OPTIONS first); credentials need Access-Control-Allow-Credentials.
    preflighted: await outcome(firstChunk({ headers: { 'Cache-Control': 'no-cache' } })),
    credentials: await outcome(firstChunk({ credentials: 'include' })),
    webSocket: await outcome(new Promise((resolve, reject) => {
      const ws = new WebSocket(base.replace('http', 'ws') + '/ws/3');
      ws.onmessage = (e) => (ws.close(), resolve(String(e.data).split('\\n')[0]));
      ws.onerror = () => reject(new Error('error event'));
    })),
    client: await outcome((async () => {
      const { connect } = await import(base + '/c1m.js');
      const connected = await Promise.all(['sse', 'ws'].map((transport) => new Promise((resolve) => {
        const client = connect(4, { transport, onState: (state) => state === 'connected' && (client.close(), resolve(transport)) });
      })));
      return connected.join(',');
    })()),
  };
}`;

/** What Chromium tells a page that CORS refused (the WebSocket aside). */
const REFUSED = {
  eventSource: 'failed: error event',
  fetch: 'failed: Failed to fetch',
  preflighted: 'failed: Failed to fetch',
  credentials: 'failed: Failed to fetch',
  client: expect.stringMatching(/^failed: Failed to fetch dynamically imported module/),
};

describe('a page on another origin, in Chromium', () => {
  it('uses every transport, preflighted requests, credentials and the browser client when its origin is listed', async () => {
    c1m = await startServer({ allowOrigin: ['http://unrelated.example', appOrigin] });
    expect(await tryFromApp(c1m.port)).toEqual({
      eventSource: "ok: Welcome, Url: '/sse/1' Id: 1",
      fetch: "ok: Welcome, Url: '/test/2' Id: 2",
      preflighted: "ok: Welcome, Url: '/test/2' Id: 2",
      credentials: "ok: Welcome, Url: '/test/2' Id: 2",
      webSocket: 'ok: welcome',
      client: 'ok: sse,ws',
    });
  });

  it("with '*', gets everything but credentials", async () => {
    c1m = await startServer({ allowOrigin: ['*'] });
    const got = await tryFromApp(c1m.port);
    expect(got).toEqual({
      eventSource: "ok: Welcome, Url: '/sse/1' Id: 1",
      fetch: "ok: Welcome, Url: '/test/2' Id: 2",
      preflighted: "ok: Welcome, Url: '/test/2' Id: 2",
      credentials: 'failed: Failed to fetch',
      webSocket: 'ok: welcome',
      client: 'ok: sse,ws',
    });
  });

  it('gets nothing, WebSocket included, when another origin is listed', async () => {
    c1m = await startServer({ allowOrigin: ['http://unrelated.example'] });
    expect(await tryFromApp(c1m.port)).toEqual({ ...REFUSED, webSocket: 'failed: error event' });
    expect(c1m.registry.connections).toBe(0);
  });

  it('by default (no list) cannot read a stream or import the client, but may open a WebSocket, which carries no ambient credential', async () => {
    c1m = await startServer();
    expect(await tryFromApp(c1m.port)).toEqual({ ...REFUSED, webSocket: 'ok: welcome' });
  });

  it("c1m's own page keeps working with a list that does not name it", async () => {
    c1m = await startServer({ allowOrigin: ['http://unrelated.example'] });
    page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${c1m.port}/?user=6&transport=ws`);
    await page.click('button[type=submit]');
    await page.waitForSelector('text=connected as 6');
    await until('the page to connect', () => c1m!.registry.isConnected(6));
  });

  it('a WebSocket offering only its token as subprotocol is refused (the server never echoes a token as the protocol)', async () => {
    c1m = await startServer();
    page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${c1m.port}/`);
    const outcome = await page.evaluate(
      (url) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, ['token.abc']);
          ws.onopen = () => resolve('open');
          ws.onclose = (e) => resolve(`closed ${e.code}`);
        }),
      `ws://127.0.0.1:${c1m.port}/ws/7`,
    );
    expect(outcome).toBe('closed 1006');
  });
});

describe('the headers', () => {
  const request = (port: number, lines: string) => {
    const client = new RawClient(port, `${lines}Host: 127.0.0.1:${port}\r\n\r\n`);
    raws.push(client);
    return client.until(/^HTTP\/1\.1 .*?\r\n\r\n/s, 'an answer').then(([head]) => head.toLowerCase());
  };
  const upgrade = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';

  it('a listed origin gets its own origin back with credentials; another is refused with 403 on every way in', async () => {
    const listed = 'https://app.example.com';
    c1m = await startServer({ allowOrigin: [listed] });
    const port = c1m.port;
    for (const path of ['/test/1', '/sse/1', '/c1m.js']) {
      const head = await request(port, `GET ${path} HTTP/1.1\r\nOrigin: ${listed}\r\n`);
      expect(head, path).toMatch(/^http\/1\.1 200 /);
      expect(head, path).toContain(`access-control-allow-origin: ${listed}\r\n`);
      expect(head, path).toContain('access-control-allow-credentials: true\r\n');
      expect(head, path).toContain('vary: origin\r\n');
      const preflight = await request(port, `OPTIONS ${path} HTTP/1.1\r\nOrigin: ${listed}\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n`);
      expect(preflight, path).toMatch(/^http\/1\.1 204 /);
      expect(preflight, path).toContain(`access-control-allow-origin: ${listed}\r\n`);
      expect(preflight, path).toContain('access-control-allow-headers: authorization, last-event-id, cache-control\r\n');
      for (const method of ['GET', 'OPTIONS']) expect(await request(port, `${method} ${path} HTTP/1.1\r\nOrigin: https://evil.example\r\n`), `${method} ${path}`).toMatch(/^http\/1\.1 403 /);
    }
    expect(await request(port, `GET /ws/1 HTTP/1.1\r\nOrigin: https://evil.example\r\n${upgrade}`)).toMatch(/^http\/1\.1 403 /);
    expect(await request(port, `GET /ws/1 HTTP/1.1\r\nOrigin: ${listed}\r\n${upgrade}`)).toMatch(/^http\/1\.1 101 /);
    // Non-browser clients send no Origin; the server's own page sends its own.
    expect(await request(port, `GET /ws/1 HTTP/1.1\r\n${upgrade}`)).toMatch(/^http\/1\.1 101 /);
    expect(await request(port, `GET /ws/1 HTTP/1.1\r\nOrigin: http://127.0.0.1:${port}\r\n${upgrade}`)).toMatch(/^http\/1\.1 101 /);
    const plain = await request(port, 'GET /sse/1 HTTP/1.1\r\n');
    expect(plain).toMatch(/^http\/1\.1 200 /);
    expect(plain).not.toContain('access-control');
  });

  it("'*' answers any origin with '*' and never with credentials; refusals carry CORS too, so a page can read why", async () => {
    c1m = await startServer({ allowOrigin: ['*'], streamSecret: 'a stream secret of thirty-two bytes or more' });
    const head = await request(c1m.port, 'GET /sse/1 HTTP/1.1\r\nOrigin: https://anyone.example\r\n');
    expect(head).toMatch(/^http\/1\.1 401 /);
    expect(head).toContain('access-control-allow-origin: *\r\n');
    expect(head).not.toContain('access-control-allow-credentials');
  });

  it('c1m cluster passes the list to its edges', async () => {
    const cluster = await spawnCluster(['--edges', '1', '--db', ':memory:', '--allow-origin', 'https://app.example.com']);
    try {
      expect(await request(cluster.port, 'GET /sse/1 HTTP/1.1\r\nOrigin: https://app.example.com\r\n')).toContain('access-control-allow-origin: https://app.example.com\r\n');
      expect(await request(cluster.port, `GET /ws/1 HTTP/1.1\r\nOrigin: https://evil.example\r\n${upgrade}`)).toMatch(/^http\/1\.1 403 /);
    } finally {
      await stopChild(cluster.child);
    }
  });

  it('an entry that is not an origin as browsers send it is refused at start, saying what to write', async () => {
    await expect(startServer({ allowOrigin: ['https://app.example.com/'] })).rejects.toThrow("use 'https://app.example.com'");
    await expect(startServer({ allowOrigin: ['app.example.com'] })).rejects.toThrow('is not an origin');
    await expect(startServer({ allowOrigin: ['null'] })).rejects.toThrow('is not an origin');
    const cli = await runCli(['server', '--allow-origin', 'https://a.example,HTTPS://B.example', '--port', '0', '--api-port', '0', '--db', ':memory:']);
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toContain("use 'https://b.example'");
  });
});
