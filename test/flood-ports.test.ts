import net from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { planWorkers, runFlood, spareRuns } from '../loadgen/flood.js';
import { spawnServer, tempDir } from './helpers.js';

const listeners: net.Server[] = [];
afterEach(() => listeners.splice(0).forEach((l) => l.close()));

/** Listens on the first free port from `port` up (a few tries), so the ports around it are known to fit the range. */
async function listenFrom(host: string, port: number): Promise<net.Server> {
  for (let p = port; ; p++) {
    const server = net.createServer();
    listeners.push(server);
    const ok = await new Promise<boolean>((resolve) => server.once('error', () => resolve(false)).listen(p, host, () => resolve(true)));
    if (ok) return server;
    if (p - port >= 20) throw new Error(`no free port on ${host} from ${port} to ${p}`);
  }
}
const portOf = (server: net.Server) => (server.address() as net.AddressInfo).port;

describe('flood source ports in use', () => {
  it("shares each source address's ports past its planned run among its slices, for the ids pushed past ports in use", () => {
    const rows = [
      { source: '127.0.1.1', firstId: 1, lastId: 5 },
      { source: '127.0.1.2', firstId: 6, lastId: 8 },
      { source: '127.0.1.1', firstId: 100, lastId: 101 },
    ];
    const ports: [number, number] = [2000, 2010];
    // 127.0.1.1 runs 2000-2006 in three slices (4, 1 and 2 ids) and has 2007-2010 to spare; 127.0.1.2 runs 2000-2002.
    expect(spareRuns(planWorkers(rows, ports, 4), ports)).toEqual([[[2007, 2008]], [[2009, 2008], [2003, 2010]], [[2009, 2010]]]);
  });

  it('skips the ports a listener holds and still opens every stream, in a slice of a source address split over workers too', async () => {
    // The server listens on the source address itself, inside the flood's port range, and a second listener a few ports up.
    const source = '127.0.83.1';
    const probe = await listenFrom(source, 30_000);
    const port = portOf(probe);
    await new Promise((r) => probe.close(r));
    const server = await spawnServer(['--host', source, '--port', String(port), '--db', join(tempDir(), 'c1m.db'), '--stats-interval', '0']);
    const other = portOf(await listenFrom(source, port + 50));
    // 200 ids over two workers: the first slice's run, port-20 up to port+79, holds both listeners' ports.
    expect(other).toBeLessThan(port + 80);
    const summary = await runFlood({
      host: source,
      port,
      rows: [{ source, firstId: 1, lastId: 200 }],
      ports: [port - 20, port + 300],
      rate: 0,
      concurrency: 50,
      duration: 0,
      maxSeconds: 20,
      perWorker: 100,
    });
    expect(summary).toMatchObject({ target: 200, workers: 2, attempted: 200, welcomed: 200, held: 200, failed: 0 });
    expect(summary.errors).toEqual({});
  });
});
