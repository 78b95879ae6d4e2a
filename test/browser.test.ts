import net from 'node:net';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { mintStreamToken } from '../server/auth.js';
import { BACKOFF_MS } from '../server/browser-client.js';
import { api, launchChromium, spawnServer, startServer, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

let browser: Browser;
let c1m: C1m;

beforeAll(async () => {
  c1m = await startServer();
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  c1m?.close();
});

it('the page at / shows messages pushed to the watched user in real time', async () => {
  c1m.store.addSubscriptions([[2, 1]]);
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${c1m.port}/`);
  await page.fill('#user', '2');
  await page.click('button[type=submit]');
  await page.waitForSelector('text=connected as 2');
  await until('the page to connect', () => c1m.registry.isConnected(2));

  expect(c1m.router.send(1, 'friend 1 played a song')).toBe(1);
  await page.waitForSelector('.message >> text=friend 1 played a song');
  expect(c1m.router.send(2, 'a note for 2')).toBe(1);
  await page.waitForSelector('.message >> text=a note for 2');
  const lines = await page.locator('.message').allTextContents();
  expect(lines).toEqual(["Welcome, Url: '/sse/2' Id: 2", 'friend 1 played a song', 'a note for 2']);

  await page.close();
  await until('logout when the tab closes', () => !c1m.registry.isConnected(2));
});

it('the page connects with a stream token from its own URL, and shows a refusal without one', async () => {
  const secret = 'page test secret, 32 bytes or more';
  const guarded = await startServer({ streamSecret: secret });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${guarded.port}/?user=3&token=${mintStreamToken(secret, 3, 60)}`);
    await page.click('button[type=submit]');
    await page.waitForSelector('text=connected as 3');
    await until('the page to connect', () => guarded.registry.isConnected(3));
    expect(guarded.router.send(3, 'signed in')).toBe(1);
    await page.waitForSelector('.message >> text=signed in');

    await page.fill('#token', '');
    await page.click('button[type=submit]');
    await page.waitForSelector('text=error 401');
    expect(guarded.stats().transports.sse.authFailures).toBeGreaterThanOrEqual(1); // the refused stream, and the client's request asking why
    await page.close();
  } finally {
    guarded.close();
  }
});

/** A free port on 127.0.0.1 in 20000-29999, below the kernel's ephemeral range. */
async function freePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    const free = await new Promise<boolean>((resolve) => {
      const probe = net.createServer().once('error', () => resolve(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

/** Each state change of the client on the page, with the page's clock. */
type Seen = { state: string; info: { delay?: number; attempt?: number; welcome?: string }; at: number };

async function connectOnPage(page: Page, transport: 'sse' | 'ws', user: number): Promise<void> {
  // A string, not a function: vitest would rewrite a function's import() into its own loader.
  await page.evaluate(`(async () => {
    const { connect } = await import('/c1m.js');
    window.seen = [];
    window.messages = [];
    connect(${user}, {
      transport: '${transport}',
      onMessage: (data) => window.messages.push(data),
      onState: (state, info) => window.seen.push({ state, info, at: performance.now() }),
    });
  })()`);
}

describe.each(['sse', 'ws'] as const)('the browser client over %s', (transport) => {
  it('receives messages, and after the server is killed and restarted reconnects with jittered backoff and receives again', async () => {
    const db = `${tempDir()}/c1m.db`;
    // Ports below the ephemeral range: the browser's own connects while the server is down may take a port from that range.
    const ports = ['--port', String(await freePort()), '--api-port', String(await freePort())];
    let server = await spawnServer(['--db', db, ...ports]);
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${server.port}/`);
      await connectOnPage(page, transport, 5);
      const seen = () => page.evaluate(() => (window as unknown as { seen: Seen[] }).seen);
      const messages = () => page.evaluate(() => (window as unknown as { messages: string[] }).messages);
      await page.waitForFunction(() => (window as unknown as { seen: Seen[] }).seen.some((s) => s.state === 'connected'));
      expect((await seen()).find((s) => s.state === 'connected')!.info.welcome).toBe(`Welcome, Url: '/${transport}/5' Id: 5`);
      expect((await api(server.apiPort, 'POST', '/send/5', 'before')).json).toMatchObject({ delivered: 1 });
      await page.waitForFunction(() => (window as unknown as { messages: string[] }).messages.includes('before'));

      server.child.kill('SIGKILL');
      await new Promise((r) => server.child.once('exit', r));
      await page.waitForFunction(() => (window as unknown as { seen: Seen[] }).seen.filter((s) => s.state === 'disconnected').length >= 3); // a few failed attempts while it is down
      server = await spawnServer(['--db', db, ...ports]);
      // The waits double from 0.5 s while it is down: the next attempt comes within 20 s.
      await page.waitForFunction(() => (window as unknown as { seen: Seen[] }).seen.filter((s) => s.state === 'connected').length >= 2, undefined, { timeout: 30_000 });

      // Every wait was drawn from [0, min(max, min * 2^attempt)), attempts counted 1, 2, 3... since the last
      // welcome, and the next attempt came after it.
      const states = await seen();
      const waits = states.flatMap((s, i) => (s.state === 'disconnected' ? [{ ...s.info, waited: states[i + 1] ? states[i + 1].at - s.at : undefined }] : []));
      expect(waits.length).toBeGreaterThanOrEqual(3);
      expect(waits.map((w) => w.attempt)).toEqual(waits.map((_, i) => i + 1));
      const bound = (w: (typeof waits)[number]) => Math.min(BACKOFF_MS.max, BACKOFF_MS.min * 2 ** (w.attempt! - 1));
      for (const w of waits) {
        expect(w.delay!).toBeGreaterThanOrEqual(0);
        expect(w.delay!).toBeLessThan(bound(w));
        if (w.waited !== undefined) expect(w.waited).toBeGreaterThanOrEqual(w.delay! - 5);
      }
      // Jitter, neither the bound itself nor nothing: a client that retried at once or at fixed times would
      // fail here (uniform draws: all under 1% of their bound, or all at 99.9% of it, has odds of 1e-6).
      expect(waits.some((w) => w.delay! < bound(w) * 0.999)).toBe(true);
      expect(waits.some((w) => w.delay! > bound(w) * 0.01)).toBe(true);

      expect((await api(server.apiPort, 'POST', '/send/5', 'after')).json).toMatchObject({ delivered: 1 });
      await page.waitForFunction(() => (window as unknown as { messages: string[] }).messages.includes('after'));
      expect(await messages()).toEqual(['before', 'after']);
    } finally {
      await page.close();
      server.child.kill('SIGKILL');
    }
  });
});

describe.each(['sse', 'ws'] as const)('the browser client resuming over %s', (transport) => {
  it('gets what was sent while its stream was down, once each and in order, and is told when its history is lost', async () => {
    const server = await startServer();
    const page = await browser.newPage();
    try {
      await page.goto(`http://127.0.0.1:${server.port}/`);
      await page.evaluate(`(async () => {
        const { connect } = await import('/c1m.js');
        window.got = [];
        window.lost = [];
        window.client = connect(5, { transport: '${transport}', onMessage: (data, { id }) => window.got.push([data, id]) });
        window.stale = connect(6, { transport: '${transport}', lastEventId: '12', onLost: (why) => window.lost.push(why) });
      })()`);
      await until('both streams', () => server.registry.isConnected(5) && server.registry.isConnected(6));
      server.router.send(5, 'before');
      await page.waitForFunction(() => (window as unknown as { got: unknown[] }).got.length === 1);
      // Every stream ends; the next sends find 5 away, so only a resume can bring them.
      server.registry.closeAll();
      server.router.send(5, 'while away 1');
      server.router.send(5, 'while away 2');
      expect(server.registry.isConnected(5)).toBe(false);
      await page.waitForFunction(() => (window as unknown as { got: unknown[] }).got.length === 3, undefined, { timeout: 10_000 });
      server.router.send(5, 'live');
      await page.waitForFunction(() => (window as unknown as { got: unknown[] }).got.length === 4);
      const got = (await page.evaluate('window.got')) as [string, number][];
      expect(got.map(([data]) => data)).toEqual(['before', 'while away 1', 'while away 2', 'live']);
      const ids = got.map(([, id]) => id);
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
      expect(new Set(ids).size).toBe(4);
      expect(server.stats().history).toMatchObject({ replayed: 2 });
      expect(await page.evaluate('window.lost')).toEqual(['expired']);
    } finally {
      await page.close();
      server.close();
    }
  });
});

describe.each(['ws', 'sse'] as const)('the browser client over %s', (transport) => {
  it('subscribes and unsubscribes while connected, is refused a topic its token does not cover, and keeps its topics for the next resume', async () => {
    const secret = 'browser topics secret, 32 bytes or more';
    const server = await startServer({ streamSecret: secret });
    const page = await browser.newPage();
    const got = () => page.evaluate('window.got') as Promise<string[]>;
    try {
      await page.goto(`http://127.0.0.1:${server.port}/`);
      const token = mintStreamToken(secret, 7, 600, Date.now(), ['photo:*']);
      await page.evaluate(`(async () => {
        const { connect } = await import('/c1m.js');
        window.got = [];
        window.client = connect(7, { transport: '${transport}', token: '${token}', topics: ['photo:789'], onMessage: (data) => window.got.push(data) });
      })()`);
      await until('the listening stream', () => server.registry.listenersOf('photo:789') === 1);
      expect(server.router.send('photo:789', 'a comment')).toBe(1);
      await page.waitForFunction(() => (window as unknown as { got: unknown[] }).got.length === 1);

      expect(await page.evaluate(`window.client.subscribe('photo:1')`)).toEqual(['photo:789', 'photo:1']);
      expect(server.registry.listenersOf('photo:1')).toBe(1);
      expect(server.router.send('photo:1', 'on photo 1')).toBe(1);
      expect(await page.evaluate(`window.client.unsubscribe(['photo:789'])`)).toEqual(['photo:1']);
      // Over SSE the stream it left ends when the server sees its socket close.
      await until('no listener of photo:789', () => server.registry.listenersOf('photo:789') === 0);
      expect(server.router.send('photo:789', 'not heard')).toBe(0);

      expect(await page.evaluate(`window.client.subscribe('match:7').catch((e) => e.message)`)).toMatch(/token does not cover topic match:7$/);
      expect(await page.evaluate('window.client.topics')).toEqual(['photo:1']);
      await page.waitForFunction(() => (window as unknown as { client: { state: string } }).client.state === 'connected');
      expect(server.registry.listenersOf('match:7')).toBe(0);
      await until('the stream back on photo:1', () => server.registry.listenersOf('photo:1') === 1 && server.registry.connections === 1);

      server.registry.closeAll();
      server.router.send('photo:1', 'while away');
      await page.waitForFunction(() => (window as unknown as { got: unknown[] }).got.length === 3, undefined, { timeout: 10_000 });
      expect(await got()).toEqual(['a comment', 'on photo 1', 'while away']);
      await until('the resumed stream on photo:1', () => server.registry.listenersOf('photo:1') === 1);
    } finally {
      await page.close();
      server.close();
    }
  });
});
