/** freePorts: distinct free ports, none that fetch() refuses (an ephemeral range widened by ./sysctl.conf reaches them). */
import net from 'node:net';
import { expect, it } from 'vitest';
import { freePorts } from '../cluster/supervisor.js';

it('hands out distinct free ports and skips the ones it is told to refuse', async () => {
  // Linux hands out odd ports to listen on (even ones to connect from): refuse half of the odd ones.
  const refused = (port: number) => port % 4 === 1;
  const ports = await freePorts('127.0.0.1', 20, refused);
  expect(new Set(ports).size).toBe(20);
  expect(ports.filter(refused)).toEqual([]);
  // Free: each can be listened on now.
  for (const port of ports) {
    await new Promise<void>((resolve, reject) => {
      const server = net.createServer().once('error', reject);
      server.listen(port, '127.0.0.1', () => server.close(() => resolve()));
    });
  }
});

it('why: fetch() will not connect to a port of the Fetch standard\'s list, such as 6000 or 10080', async () => {
  for (const port of [6000, 10080]) {
    const err = await fetch(`http://127.0.0.1:${port}/`).catch((e: Error) => e);
    // Refused before any connection is tried: not "connection refused", whether or not something listens there.
    expect((err as Error & { cause?: Error }).cause?.message).toBe('bad port');
  }
});
