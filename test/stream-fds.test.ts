/**
 * Fills a real `c1m server` process to its real open-file limit (lowered to
 * 600 with prlimit so that the test stays small) with streams and with sockets
 * that send half a request and then nothing, as a hostile client would.
 * Load from 127.0.10.x, closed with RST.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, expect, it } from 'vitest';
import { cpuOf } from '../loadgen/server-process.js';
import { spawnServer, stopChild } from './helpers.js';
import { until } from '../bench/until.js';

const LIMIT = 600;
const MAX_STREAMS = 300;
const sockets: net.Socket[] = [];
afterAll(() => sockets.splice(0).forEach((s) => s.resetAndDestroy()));

/** Opens a socket from 127.0.10.<1-250> that sends `request`; resolves with what it got back within `ms` ('' for nothing, 'refused' when refused). */
function connect(port: number, request: string, ms = 1000): Promise<{ socket: net.Socket; answer: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: `127.0.10.${1 + (sockets.length % 250)}` });
    sockets.push(socket);
    let answer = '';
    const done = () => resolve({ socket, answer });
    socket.on('data', (d) => {
      answer += d;
      if (answer.includes('\r\n\r\n')) done();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      answer ||= err.code === 'ECONNREFUSED' ? 'refused' : String(err.code);
      done();
    });
    socket.on('connect', () => socket.write(request));
    setTimeout(done, ms);
  });
}
const stream = (port: number, id: number) => connect(port, `GET /test/${id} HTTP/1.1\r\nHost: x\r\n\r\n`);


it('at its fd limit, keeps the API answering at low CPU, refuses new streams clearly, and takes streams again once slots free up', async () => {
  // A configured port, as in production: the kernel will not rebind a port it picked itself while streams hold it.
  const port = await new Promise<number>((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  const server = await spawnServer(['--db', ':memory:', '--port', String(port), '--max-connections', String(MAX_STREAMS)]);
  const pid = server.child.pid!;
  try {
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${LIMIT}:${LIMIT}`]);
    const streams = [];
    for (let i = 1; i <= MAX_STREAMS; i++) streams.push(await stream(server.port, i));
    expect(streams.every((s) => s.answer.startsWith('HTTP/1.1 200'))).toBe(true);
    expect((await stream(server.port, 9999)).answer).toMatch(/^HTTP\/1\.1 503 .*server full/s);

    // Half-sent requests take every descriptor left, and more.
    const halfSent = await Promise.all(Array.from({ length: LIMIT - MAX_STREAMS + 50 }, () => connect(server.port, 'GET /test/1 HTTP/1.1\r\nHo', 200)));
    expect(halfSent.length).toBeGreaterThan(0);
    // Without a guard, uSockets retries accept() on EMFILE forever and the API cannot accept at all.
    const stats = () => fetch(`http://127.0.0.1:${server.apiPort}/stats`, { signal: AbortSignal.timeout(1000) }).then((r) => r.json(), () => null);
    await until(
      'the guard to pause accepting',
      async () => {
        expect(await stats()).toMatchObject({ connections: MAX_STREAMS, fdExhaustions: 1 });
        return true;
      },
      5000,
    );
    expect(server.output()).toContain('out of file descriptors: not accepting on the public port until some are free');
    const before = cpuOf(pid);
    await new Promise((r) => setTimeout(r, 1000));
    expect(cpuOf(pid) - before).toBeLessThan(0.2); // not spinning on accept()
    expect((await stream(server.port, 9998)).answer).toBe('refused');

    // The half-sent sockets go away: the server accepts again, says full, then reuses a freed slot.
    halfSent.forEach(({ socket }) => socket.resetAndDestroy());
    await until('accepting again', () => server.output().includes('accepting on the public port again'), 5000);
    expect((await stream(server.port, 9997)).answer).toMatch(/^HTTP\/1\.1 503 .*server full/s);
    streams[0].socket.resetAndDestroy();
    await until('the freed slot', async () => (await stats())?.connections === MAX_STREAMS - 1);
    expect((await stream(server.port, 9996)).answer).toMatch(/^HTTP\/1\.1 200 /);
  } finally {
    sockets.splice(0).forEach((s) => s.resetAndDestroy());
    await stopChild(server.child);
  }
}, 60_000);
