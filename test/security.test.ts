import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { C1m } from '../index.js';
import { checkStreamToken, mintStreamToken } from '../server/auth.js';
import { until } from '../bench/until.js';
import { api, runCli, startServer, StreamClient } from './helpers.js';

let c1m: C1m | undefined;
const clients: StreamClient[] = [];
afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
  c1m?.close();
  c1m = undefined;
});
const get = (path: string) => fetch(`http://127.0.0.1:${c1m!.port}${path}`, { signal: AbortSignal.timeout(2000) });

describe('public port', () => {
  it('serves streams as text/plain with nosniff by default, text/html with contentType html', async () => {
    c1m = await startServer({ contentType: 'html' });
    const client = await StreamClient.open(c1m.port, 5);
    clients.push(client);
    expect(client.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(client.headers['x-content-type-options']).toBe('nosniff');
  });

  it('with a stream secret, opens /test/<id> only with a valid token for that id, and counts refusals', async () => {
    const secret = 'test secret, at least 32 bytes long';
    c1m = await startServer({ streamSecret: secret });
    const missing = await get('/test/7');
    expect(missing.status).toBe(401);
    expect(await missing.text()).toContain('?token=');
    const cases = [
      mintStreamToken(secret, 8, 60), // another user's
      mintStreamToken(secret, 7, 60, Date.now() - 120_000), // expired a minute ago
      mintStreamToken('another secret', 7, 60),
      'garbage',
    ];
    for (const token of cases) expect((await get(`/test/7?token=${encodeURIComponent(token)}`)).status, token).toBe(403);
    expect(c1m.stats().authFailures).toBe(1 + cases.length);
    expect(c1m.stats().connections).toBe(0);

    const client = new StreamClient(c1m.port, `/test/7?token=${mintStreamToken(secret, 7, 60)}`);
    clients.push(client);
    await until('the welcome', () => client.lines.length === 1);
    expect(client.status).toBe(200);
    expect(c1m.router.send(7, 'for 7 only')).toBe(1);
    await until('the message', () => client.messages.length > 0);
    expect(client.messages).toEqual(['for 7 only']);
  });

  it('mints tokens from the CLI that the server accepts, and tells why a token is refused', async () => {
    const run = await runCli(['token', '42', '--ttl', '60'], { env: { C1M_STREAM_SECRET: 'cli secret, at least 32 bytes long' } });
    expect(run.code).toBe(0);
    const token = run.stdout.trim();
    expect(checkStreamToken('cli secret, at least 32 bytes long', 42, token)).toBeNull();
    expect(checkStreamToken('cli secret, at least 32 bytes long', 43, token)).toBe('token is for user 42');
    expect(checkStreamToken('cli secret, at least 32 bytes long', 42, token, Date.now() + 61_000)).toBe('token expired');
    expect(checkStreamToken('other', 42, token)).toBe('bad signature');
  });
});

describe('backend API exposure', () => {
  it('refuses a non-loopback API without a token unless told it is fine', async () => {
    await expect(startServer({ apiHost: '0.0.0.0' })).rejects.toThrow(/refusing to serve the backend API on 0\.0\.0\.0 without a token/);
    c1m = await startServer({ apiHost: '0.0.0.0', token: 't' });
    c1m.close();
    c1m = await startServer({ apiHost: '0.0.0.0', apiInsecure: true });
    expect((await api(c1m.apiPort, 'GET', '/stats')).status).toBe(200);
  });

  it('answers 413 above the maximum message size and closes the connection unread', async () => {
    c1m = await startServer({ maxMessage: 1000 });
    const socket = net.connect(c1m.apiPort, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => (answer += d));
    const closed = new Promise((resolve) => socket.on('close', resolve));
    socket.write('POST /send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n');
    await closed;
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer).toContain('larger than 1000 bytes');
    expect((await api(c1m.apiPort, 'POST', '/send/1', 'x'.repeat(1000))).json).toMatchObject({ delivered: 0 });
    expect(c1m.stats().sends).toBe(1);
    await expect(startServer({ maxMessage: 2000, maxBacklog: 1000 })).rejects.toThrow(/max message \(2000 bytes\) must not exceed max backlog/);
  });
});

describe('a stand-alone server', () => {
  it('refuses a port another server already holds, even though uWS listens with SO_REUSEPORT', async () => {
    c1m = await startServer();
    await expect(startServer({ port: c1m.port })).rejects.toThrow(`cannot listen for comet streams on 127.0.0.1:${c1m.port}: the port is already in use`);
    const run = await runCli(['server', '--host', '127.0.0.1', '--port', '0', '--api-port', String(c1m.apiPort), '--db', ':memory:']);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`cannot listen for the backend API on 127.0.0.1:${c1m.apiPort}: the port is already in use`);
    // The first server still has both ports to itself.
    expect((await api(c1m.apiPort, 'GET', '/stats')).json.connections).toBe(0);
  });
});
