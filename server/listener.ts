import { createServer } from 'node:net';
import type { Logger } from 'pino';
import { FdGuard } from './limits.js';
import type { TemplatedApp, Uws, us_listen_socket } from './uws.js';

/** Fails when another process listens on host:port (a plain bind, without SO_REUSEPORT, is refused then). Port 0 is always free. */
export async function assertPortFree(host: string, port: number, what: string): Promise<void> {
  if (port === 0) return;
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen for ${what} on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the port is already in use' : err.message}`)),
    );
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/** Listens now (uWS calls back before app.listen returns); null if the address cannot be bound. */
function listenNow(app: TemplatedApp, host: string, port: number): us_listen_socket | null {
  let socket: us_listen_socket | false = false;
  app.listen(host, port, (s) => {
    socket = s;
  });
  return (socket as us_listen_socket | false) || null;
}

/** Listens, or throws naming what could not listen where; returns the socket and the port actually bound (port 0 picks a free one). */
export function listen(uws: Uws, app: TemplatedApp, host: string, port: number, what: string): { socket: us_listen_socket; port: number } {
  const socket = listenNow(app, host, port);
  if (!socket) throw new Error(`cannot listen for ${what} on ${host}:${port}`);
  return { socket, port: uws.us_socket_local_port(socket as never) };
}

/**
 * The public port's listener, open exactly while its owner wants new streams
 * and the process has descriptors to spare. The single process always wants
 * them; an edge does not while it is full or draining, so that the kernel
 * hands new connections to the other edges on the port. Closing a listener
 * resets the connections waiting in its accept queue unless
 * net.ipv4.tcp_migrate_req=1 hands them to the other listeners on the port.
 */
export class PublicListener {
  readonly port: number;
  /** uSockets retries accept() on EMFILE at 100% CPU: stop accepting before the process runs out. */
  readonly fds: FdGuard;
  private socket: us_listen_socket | null;
  private wanted = true;
  private relistenFailed = false;

  constructor(
    private readonly uws: Uws,
    private readonly app: TemplatedApp,
    private readonly host: string,
    port: number,
    what: string,
    private readonly log: Logger,
    /** Streams held now, for the log lines. */
    private readonly streams: () => number,
  ) {
    ({ socket: this.socket, port: this.port } = listen(uws, app, host, port, what));
    this.fds = new FdGuard(this.reconcile, this.reconcile);
  }

  /** Whether the owner wants new streams now. */
  want(wanted: boolean): void {
    this.wanted = wanted;
    this.reconcile();
  }

  get listening(): boolean {
    return this.socket !== null;
  }

  /** Stops listening for good. */
  close(): void {
    this.wanted = false;
    this.fds.close();
    if (this.socket) this.uws.us_listen_socket_close(this.socket);
    this.socket = null;
  }

  /** Listens or not, as wanted and as descriptors allow; false when listening again failed (then FdGuard retries). */
  private readonly reconcile = (): boolean => {
    const wanted = this.wanted && !this.fds.paused;
    if (!wanted && this.socket) {
      this.uws.us_listen_socket_close(this.socket);
      this.socket = null;
      if (this.fds.paused) this.log.warn({ streams: this.streams() }, 'out of file descriptors: not accepting on the public port until some are free');
      else this.log.info({ streams: this.streams() }, 'stopped accepting');
    } else if (wanted && !this.socket) {
      this.socket = listenNow(this.app, this.host, this.port);
      if (this.socket) this.log.info({ streams: this.streams() }, 'accepting on the public port again');
      // The kernel refuses to bind again a port it picked (port 0) while streams hold it; a configured port rebinds.
      else if (!this.relistenFailed) this.log.error({ port: this.port }, 'cannot listen on the public port again; retrying');
      this.relistenFailed = this.socket === null;
    }
    this.fds.watch(wanted);
    return !wanted || this.socket !== null;
  };
}
