import { join } from 'node:path';
import { expect, it } from 'vitest';
import { api, spawnServer, stopChild, StreamClient, tempDir } from './helpers.js';
import { until } from '../bench/until.js';

it('--demo seeds an empty store once, prints what to try, and the printed steps work', async () => {
  const db = join(tempDir(), 'c1m.db');
  let server = await spawnServer(['--db', db, '--demo', '--stats-interval', '1']);
  await until('the demo instructions', () => server.output().includes('curl -X POST'));
  expect(server.output()).toContain(`curl -N 127.0.0.1:${server.port}/test/1`);
  expect(server.output()).toContain(`curl -X POST 127.0.0.1:${server.apiPort}/send/2 -d hi`);
  expect((await api(server.apiPort, 'GET', '/subscribers/2')).json).toEqual([1, 3, 4]);

  // The printed walk-through: watch 1, have 2 say hi.
  const watcher = await StreamClient.open(server.port, 1);
  expect((await api(server.apiPort, 'POST', '/send/2', 'hi')).json).toMatchObject({ delivered: 1 });
  await until('user 1 to receive hi', () => watcher.messages[0] === 'hi');
  // The periodic stats line, structured like every log line.
  await until('a stats log line', () => /"connections":1,.*"sends":1,.*"msg":"stats"/.test(server.output()), 3000);
  watcher.close();

  // A second start finds the store populated: no reseeding, no instructions.
  await api(server.apiPort, 'DELETE', '/subscriptions', '[[1,2]]');
  await stopChild(server.child);
  server = await spawnServer(['--db', db, '--demo']);
  expect((await api(server.apiPort, 'GET', '/subscribers/2')).json).toEqual([3, 4]);
  // The instructions would be printed right after start() returns, before the process serves any request: the answer above is the sentinel.
  expect(server.output()).not.toContain('Demo friends graph added');
  await stopChild(server.child);
});

it('keeps serving, logging and stopping on SIGTERM after whatever reads its logs has gone away', async () => {
  for (const statsInterval of ['0', '1']) {
    const server = await spawnServer(['--db', ':memory:', '--stats-interval', statsInterval]);
    server.child.stdout!.destroy(); // the log reader dies: every later log line meets EPIPE
    await new Promise((r) => setTimeout(r, 1500)); // with stats on, a line written into the void
    const client = await StreamClient.open(server.port, 1);
    expect((await api(server.apiPort, 'POST', '/send/1', 'still up')).json).toMatchObject({ delivered: 1 });
    await until('delivery', () => client.messages[0] === 'still up');
    client.close();
    // The shutdown log line meets EPIPE too; the process must exit all the same.
    const exited = new Promise((r) => server.child.once('exit', (code, signal) => r(signal ?? code)));
    server.child.kill('SIGTERM');
    expect(await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]), `stats every ${statsInterval} s`).toBe(0);
  }
});
