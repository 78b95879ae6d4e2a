/**
 * A connection for JetStream (streams, consumers, KV) through the NATS
 * project's own client (@nats-io/transport-node): the replicated state. The
 * bus (deliveries, presence, sends) stays on c1m's minimal client (nats.ts).
 * Same servers, credentials file (an NKey seed) and TLS CA as the bus.
 */
import { connect, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { readFileSync } from 'node:fs';
import { readCreds, serverIdentity } from './nats-auth.js';

export interface JetStreamConnectOptions {
  /** The connection's name, as nats-server logs it. */
  name: string;
  creds?: string;
  ca?: string;
  /** The subject prefix of this process's inboxes (the routers': ROUTER_INBOX), where JetStream's answers come. */
  inboxPrefix?: string;
  /** Reconnect for ever (cluster processes; default) or fail at once (one-off commands). */
  persistent?: boolean;
}

export async function connectJetStream(servers: string, options: JetStreamConnectOptions): Promise<NatsConnection> {
  const persistent = options.persistent ?? true;
  const seed = options.creds ? readCreds(options.creds).seed : undefined;
  return connect({
    servers: servers.split(','),
    name: options.name,
    inboxPrefix: options.inboxPrefix,
    ...(seed && { authenticator: nkeyAuthenticator(new TextEncoder().encode(seed)) }),
    ...(options.ca && { tls: { ca: readFileSync(options.ca, 'utf8'), ...serverIdentity(servers) } }),
    maxReconnectAttempts: persistent ? -1 : 0,
    waitOnFirstConnect: persistent,
    // Otherwise every request (each message a router publishes is one) builds an Error up front for the stack a
    // timeout would show: a share of an acknowledged send's CPU that the profile shows, for a trace nobody reads.
    noAsyncTraces: true,
  });
}
