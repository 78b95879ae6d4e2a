import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { mintStreamToken } from '../server/auth.js';
import { startServer, waitFor } from './helpers.js';

let browser: Browser;
let c1m: C1m;

beforeAll(async () => {
  c1m = await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
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
  await waitFor(() => c1m.registry.isConnected(2), 'the page to connect');

  expect(c1m.router.send(1, 'friend 1 played a song')).toBe(1);
  await page.waitForSelector('.message >> text=friend 1 played a song');
  expect(c1m.router.send(2, 'a note for 2')).toBe(1);
  await page.waitForSelector('.message >> text=a note for 2');
  const lines = await page.locator('.message').allTextContents();
  expect(lines).toEqual(["Welcome, Url: '/test/2' Id: 2", 'friend 1 played a song', 'a note for 2']);

  await page.close();
  await waitFor(() => !c1m.registry.isConnected(2), 'logout when the tab closes');
});

it('the page connects with a stream token from its own URL, and shows a refusal without one', async () => {
  const secret = 'page test secret';
  const guarded = await startServer({ streamSecret: secret });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${guarded.port}/?user=3&token=${mintStreamToken(secret, 3, 60)}`);
    await page.click('button[type=submit]');
    await page.waitForSelector('text=connected as 3');
    await waitFor(() => guarded.registry.isConnected(3), 'the page to connect');
    expect(guarded.router.send(3, 'signed in')).toBe(1);
    await page.waitForSelector('.message >> text=signed in');

    await page.fill('#token', '');
    await page.click('button[type=submit]');
    await page.waitForSelector('text=error 401');
    expect(guarded.stats().authFailures).toBe(1);
    await page.close();
  } finally {
    guarded.close();
  }
});
