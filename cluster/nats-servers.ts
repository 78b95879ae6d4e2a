/**
 * The servers a NATS client may connect to (see nats.ts): those it was given,
 * then those their cluster announces (connect_urls in the INFO), tried in
 * turn, as nats.js keeps its server list apart from its connection.
 */

export interface Server {
  host: string;
  port: number;
  /** tls:// in the URL: the client insists on TLS. */
  tls: boolean;
}

/** host:port, an IPv6 host in brackets. */
export const serverName = (s: Server) => `${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port}`;

/** nats://host:port, tls://host:port or host:port (port 4222 when none). */
function parseServer(text: string): Server {
  const url = new URL(text.includes('://') ? text : `nats://${text}`);
  if (!['nats:', 'tls:'].includes(url.protocol)) throw new Error(`NATS URL ${text}: use nats:// or tls://`);
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port) || 4222, tls: url.protocol === 'tls:' };
}

export class Servers {
  private readonly list: Server[];
  private next = 0;

  constructor(urls: string[]) {
    this.list = urls.map(parseServer);
  }

  /** How many are known now. */
  get length(): number {
    return this.list.length;
  }

  /** The one to try next, in turn. */
  take(): Server {
    return this.list[this.next++ % this.list.length];
  }

  /** The known server of this name (host:port), if any. */
  named(name: string): Server | undefined {
    return this.list.find((s) => serverName(s) === name);
  }

  /** Servers the cluster of `via` has, from its INFO's connect_urls: reconnections may go to them too, with TLS as `via`. */
  learn(connectUrls: string[] | undefined, via: Server): void {
    for (const url of connectUrls ?? []) {
      const server = { ...parseServer(url), tls: via.tls };
      if (!this.named(serverName(server))) this.list.push(server);
    }
  }
}
