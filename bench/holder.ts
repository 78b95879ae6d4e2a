/**
 * Holds many comet connections open and counts the bytes they receive. Run as
 * a child process (IPC) so that its memory and CPU are not the server's.
 * Connections spread over several loopback source addresses and are closed
 * with RST, so no TIME_WAIT entries pin the port range after a run.
 */
import net from 'node:net';

export type HolderCommand =
  | { type: 'open'; host: string; port: number; firstId: number; count: number; sources: string[]; concurrency: number; transport: 'chunked' | 'sse' | 'ws'; topics: Topics }
  | { type: 'bytes' }
  | { type: 'close' };

export type HolderReply =
  | { type: 'opened'; opened: number; failed: number; ms: number }
  | { type: 'bytes'; bytes: number; open: number }
  | { type: 'closed' };

const sockets: net.Socket[] = [];
let bytes = 0;
let welcomed = 0;
let failed = 0;

// Shared handlers, not one closure per socket: this process may hold tens of thousands.
function onData(chunk: Buffer): void {
  bytes += chunk.length;
}
function onFirstData(): void {
  welcomed++;
}
function onError(): void {
  failed++;
}

/** Each stream listens to `perStream` of `of` topics, so that a topic is shared by many streams. */
export interface Topics {
  perStream: number;
  of: number;
}

/**
 * The request that opens stream `id` of a transport, listening to its topics (consecutive from room:<id mod of>);
 * WebSockets with a fixed key (nothing checks the answer's).
 */
function request(transport: 'chunked' | 'sse' | 'ws', id: number, host: string, topics: Topics): string {
  const query = topics.perStream > 0 ? `?topics=${Array.from({ length: topics.perStream }, (_, j) => `room:${(id + j) % topics.of}`).join(',')}` : '';
  if (transport === 'ws') {
    return `GET /ws/${id}${query} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;
  }
  return `GET /${transport === 'sse' ? 'sse' : 'test'}/${id}${query} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
}

async function open(cmd: Extract<HolderCommand, { type: 'open' }>): Promise<HolderReply> {
  const started = performance.now();
  const target = welcomed + cmd.count;
  let next = 0;
  const connectOne = (): void => {
    if (next >= cmd.count) return;
    const id = cmd.firstId + next;
    const socket = net.connect({ host: cmd.host, port: cmd.port, localAddress: cmd.sources.length ? cmd.sources[next % cmd.sources.length] : undefined });
    next++;
    socket.setNoDelay(true);
    socket.once('connect', () => socket.write(request(cmd.transport, id, cmd.host, cmd.topics)));
    socket.once('data', onFirstData);
    socket.once('data', connectOne); // keep `concurrency` handshakes in flight
    socket.on('data', onData);
    socket.on('error', onError);
    socket.once('error', connectOne);
    sockets.push(socket);
  };
  for (let i = 0; i < cmd.concurrency; i++) connectOne();
  const deadline = Date.now() + 120_000;
  while (welcomed + failed < target && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  return { type: 'opened', opened: welcomed, failed, ms: performance.now() - started };
}

process.on('message', async (cmd: HolderCommand) => {
  if (cmd.type === 'open') process.send!(await open(cmd));
  else if (cmd.type === 'bytes') process.send!({ type: 'bytes', bytes, open: sockets.filter((s) => !s.destroyed).length });
  else if (cmd.type === 'close') {
    for (const s of sockets) s.resetAndDestroy();
    process.send!({ type: 'closed' }, () => process.exit(0));
  }
});
