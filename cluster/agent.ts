/**
 * HAProxy's agent check for one edge: a TCP port that answers each
 * connection with the edge's state and weight, then closes.
 */
import net from 'node:net';
import type { EdgeState } from './messages.js';

/**
 * While accepting: free capacity as a weight, `ready` (it lifts a drain or
 * maint HAProxy saw earlier, which it otherwise keeps for good) and `maxconn:`
 * the count at which this edge stops listening, so HAProxy never sends it a
 * stream it would refuse. `drain` when full or draining (no new streams, keep
 * the open ones), `maint` when stopping.
 */
export function agentReply(state: EdgeState, streams: number, capacity: number, limit: number): string {
  if (state === 'up') return `up ready ${Math.max(1, Math.floor((100 * (capacity - streams)) / capacity))}% maxconn:${limit}\n`;
  return state === 'stopping' ? 'maint\n' : 'drain\n';
}

export function agentServer(host: string, port: number, reply: () => string): Promise<net.Server & { port: number }> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.end(reply());
    });
    server.once('error', reject);
    server.listen(port, host, () => resolve(Object.assign(server, { port: (server.address() as net.AddressInfo).port })));
  });
}
