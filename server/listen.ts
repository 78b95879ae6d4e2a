import type { TemplatedApp, Uws, us_listen_socket } from './uws.js';

/** Listens now (uWS calls back before app.listen returns); null if the address cannot be bound. */
export function listenNow(app: TemplatedApp, host: string, port: number): us_listen_socket | null {
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
