/**
 * The bus over NATS (an existing broker, Debian's nats-server) through our
 * own minimal client (./nats.ts), carrying BusMessage values encoded with
 * msgpack.
 */
import { dispatch, type Bus, type BusEvents, type BusHandler } from './bus.js';
import { readFileSync } from 'node:fs';
import { decode, encode, type BusMessage } from './messages.js';
import { readCreds } from './nats-auth.js';
import { NatsClient, type NatsFatalError } from './nats.js';

export interface NatsBusOptions {
  /** The connection's name, as nats-server logs it. */
  name: string;
  /** Wait and reconnect rather than fail (default: true, cluster processes); false for one-off commands. */
  persistent?: boolean;
  /** A credentials file (an NKey user seed, ./nats-auth.ts). */
  creds?: string;
  /** The subject prefix of this process's inboxes (see NatsOptions.inboxPrefix). */
  inboxPrefix?: string;
  /** PEM file of the certificate authorities a TLS server must chain to (default: the system's). */
  ca?: string;
  /**
   * An error that retrying cannot cure, once connected (credentials refused after a restart with a
   * new configuration): by default, say so and exit 1 rather than retry for ever.
   */
  fatal?: (err: NatsFatalError) => void;
}

export class NatsBus implements Bus {
  private constructor(
    private readonly nc: NatsClient,
    private readonly events: BusEvents,
  ) {}

  /**
   * Connects. A process of the cluster (`persistent`) waits and reconnects for
   * ever rather than dying with NATS; a one-off command fails at once.
   */
  static async connect(servers: string, options: NatsBusOptions, events: BusEvents = {}): Promise<NatsBus> {
    const { name } = options;
    const warning = events.warning ?? ((message: string) => console.warn(`${name}: ${message}`));
    const nc = await NatsClient.connect(servers.split(','), {
      name,
      persistent: options.persistent ?? true,
      inboxPrefix: options.inboxPrefix,
      user: options.creds ? readCreds(options.creds) : undefined,
      ca: options.ca ? readFileSync(options.ca) : undefined,
      reconnected: () => events.reconnected?.(),
      warning,
      fatal:
        options.fatal ??
        ((err) => {
          console.error(`${name}: ${err.message}`);
          process.exit(1);
        }),
    });
    return new NatsBus(nc, { ...events, warning });
  }

  publish(subject: string, message: BusMessage, replyTo?: string): void {
    // Once closing (shutdown) the message is dropped; while reconnecting the client buffers it.
    if (this.nc.isClosed) return;
    try {
      this.nc.publish(subject, encode(message), replyTo);
    } catch (err) {
      this.events.warning?.(`cannot publish a ${message.t} to ${subject}: ${(err as Error).message}`);
    }
  }

  subscribe(subject: string, handler: BusHandler, queue?: string): void {
    this.nc.subscribe(
      subject,
      (data, reply, matched) => {
        // An empty payload is NATS's own "no responders" status on a reply subject, not a c1m message.
        if (data.length > 0) dispatch(matched, data, reply, handler, this.events);
      },
      queue,
    );
  }

  unsubscribe(subject: string): void {
    this.nc.unsubscribe(subject);
  }

  inbox(): string {
    return this.nc.inbox();
  }

  async request(subject: string, message: BusMessage, timeoutMs = 2000): Promise<BusMessage> {
    return decode(await this.nc.request(subject, encode(message), timeoutMs));
  }

  get maxPayload(): number {
    return this.nc.maxPayload;
  }

  /** host:port of the NATS server. */
  get server(): string {
    return this.nc.server;
  }

  async close(): Promise<void> {
    await this.nc.close();
  }
}
