import type { TemplatedApp, Uws, us_listen_socket } from './uws.js';

/** Listens and resolves with the socket and the port actually bound (port 0 picks a free one). */
export function listen(uws: Uws, app: TemplatedApp, host: string, port: number, what: string): Promise<{ socket: us_listen_socket; port: number }> {
  return new Promise((resolve, reject) => {
    app.listen(host, port, (socket) => {
      if (!socket) return reject(new Error(`cannot listen for ${what} on ${host}:${port}`));
      resolve({ socket, port: uws.us_socket_local_port(socket as never) });
    });
  });
}
