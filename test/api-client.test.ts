import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient, type Answer } from '../loadgen/api-client.js';
import { until } from '../bench/until.js';

const servers: Server[] = [];
afterEach(() => servers.splice(0).forEach((s) => s.close()));

async function listen<S extends Server>(server: S): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A request's outcome: its answer or its error kind. */
function call(client: ApiClient, method: 'GET' | 'POST', path: string, body: () => string) {
  return new Promise<Answer | string>((resolve) => client.request(method, path, body, resolve, resolve));
}

describe('ApiClient (msggen to the API)', () => {
  it('makes each body when it writes it, so a queued send is stamped when it leaves, not when it was asked for', async () => {
    const events: string[] = [];
    // Answers each request 50 ms after it arrives: with one connection, the second send waits for the first answer.
    const port = await listen(
      createHttpServer((req: IncomingMessage, res: ServerResponse) => {
        let body = '';
        req.on('data', (d) => (body += d)).on('end', () => {
          events.push(`arrived ${body}`);
          setTimeout(() => {
            events.push(`answered ${body}`);
            res.end(JSON.stringify({ delivered: 1, path: req.url, auth: req.headers.authorization }));
          }, 50);
        });
      }),
    );
    const client = new ApiClient('127.0.0.1', port, 1, { authorization: 'Bearer sesame', 'content-type': 'text/plain' });
    await client.ready();
    const madeAt: number[] = [];
    const body = (text: string) => () => (events.push(`made ${text}`), madeAt.push(performance.now()), text);
    const timed = (request: Promise<Answer | string>) => request.then((answer) => ({ answer: answer as Answer, at: performance.now() }));
    const [first, second] = await Promise.all([timed(call(client, 'POST', '/send/1', body('one'))), timed(call(client, 'POST', '/send/2', body('two')))]);
    expect(client.queued).toBe(0);
    expect(first.answer).toMatchObject({ status: 200, body: JSON.stringify({ delivered: 1, path: '/send/1', auth: 'Bearer sesame' }) });
    expect(second.answer).toMatchObject({ status: 200, body: JSON.stringify({ delivered: 1, path: '/send/2', auth: 'Bearer sesame' }) });
    // The second body was made only after the first answer, and its latency is timed from then: from when it
    // was asked for, it would include the first request's 50 ms.
    expect(events).toEqual(['made one', 'arrived one', 'answered one', 'made two', 'arrived two', 'answered two']);
    expect(second.answer.micros).toBeLessThanOrEqual((second.at - madeAt[1]) * 1000);
    expect(first.answer.micros).toBeLessThanOrEqual((first.at - madeAt[0]) * 1000);
    client.close();
  });

  it('rejects ready() with the reason when the API cannot be reached', async () => {
    const port = await listen(createTcpServer());
    const closed = servers.pop()!;
    await new Promise((r) => closed.close(r)); // a port nobody listens on any more
    const client = new ApiClient('127.0.0.1', port, 2, {});
    await expect(client.ready()).rejects.toThrow(/cannot connect to the API at 127\.0\.0\.1:\d+: ECONNREFUSED/);
    expect(await call(client, 'POST', '/send/1', () => 'x')).toBe('closed');
  });

  it('counts a dropped connection and a malformed answer as errors, and reconnects for the next send', async () => {
    let n = 0;
    // First request: the socket is dropped. Second: an answer without a Content-Length. Then proper answers.
    const port = await listen(
      createTcpServer((socket) => {
        socket.on('data', () => {
          n++;
          if (n === 1) socket.destroy();
          else if (n === 2) socket.end('HTTP/1.1 200 OK\r\n\r\n{}');
          else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"delivered":3}');
        });
      }),
    );
    const client = new ApiClient('127.0.0.1', port, 1, {});
    await client.ready();
    expect(await call(client, 'POST', '/send/1', () => 'a')).toMatch(/^(closed|ECONNRESET)$/);
    await until('the protocol error answer', async () => { expect(await call(client, 'POST', '/send/1', () => 'b')).toBe('protocol'); return true; }, 2000, 150);
    await until('a send delivered to 3', async () => { expect(await call(client, 'POST', '/send/1', () => 'c')).toMatchObject({ status: 200, body: '{"delivered":3}' }); return true; }, 2000, 150);
    client.close();
  });

  it('reads answers split across reads and fails what is still queued or in flight on close', async () => {
    // Sends each answer in three pieces, 10 ms apart; never answers /hang.
    const port = await listen(
      createTcpServer((socket) => {
        socket.on('data', (d) => {
          if (d.toString().startsWith('POST /hang')) return;
          const parts = ['HTTP/1.1 20', '0 OK\r\nContent-Le', 'ngth: 2\r\n\r\nok'];
          parts.forEach((p, i) => setTimeout(() => socket.write(p), i * 10));
        });
      }),
    );
    const client = new ApiClient('127.0.0.1', port, 1, {});
    await client.ready();
    expect(await call(client, 'GET', '/stats', () => '')).toMatchObject({ status: 200, body: 'ok' });
    const hung = call(client, 'POST', '/hang', () => 'x');
    const queued = call(client, 'POST', '/send/1', () => 'y');
    expect(client.queued).toBe(1);
    client.close();
    expect(await hung).toBe('unanswered');
    expect(await queued).toBe('unanswered');
  });
});
