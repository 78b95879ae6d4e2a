/**
 * The bus between c1m processes: NATS (an existing broker, Debian's
 * nats-server) through our own minimal client (./nats.ts), carrying
 * BusMessage values encoded with msgpack. Everything above this file sees only
 * publish/subscribe of typed messages.
 */
import { NatsClient } from './nats.js';
import { decode, encode, type BusMessage } from './messages.js';

export type BusHandler = (message: BusMessage, replyTo: string | undefined) => void;

export interface BusEvents {
  /** The connection to NATS came back after an outage: state may have been missed. */
  reconnected?: () => void;
  /** A payload that is not a c1m message arrived (logged, never fatal). */
  malformed?: (subject: string, err: Error) => void;
  /** The connection's own trouble (an -ERR, a lost connection, publishes dropped during an outage); stderr by default. */
  warning?: (message: string) => void;
}

export class Bus {
  private constructor(
    private readonly nc: NatsClient,
    private readonly events: BusEvents,
  ) {}

  /**
   * Connects. A process of the cluster (`persistent`) waits and reconnects for
   * ever rather than dying with NATS; a one-off command fails at once.
   */
  static async connect(servers: string, name: string, events: BusEvents = {}, persistent = true): Promise<Bus> {
    const nc = await NatsClient.connect(servers.split(','), {
      name,
      persistent,
      reconnected: () => events.reconnected?.(),
      warning: events.warning ?? ((message) => console.warn(`${name}: ${message}`)),
    });
    return new Bus(nc, events);
  }

  /** Publishes; while reconnecting the client buffers, and once closing (shutdown) the message is dropped. */
  publish(subject: string, message: BusMessage, replyTo?: string): void {
    if (this.nc.isClosed) return;
    this.nc.publish(subject, encode(message), replyTo);
  }

  /** Subscribes; with `queue`, each message goes to one member of the group (routers sharing sends). */
  subscribe(subject: string, handler: BusHandler, queue?: string): void {
    this.nc.subscribe(
      subject,
      (data, reply) => {
        // An empty payload is NATS's own "no responders" status on a reply subject, not a c1m message.
        if (data.length === 0) return;
        let message: BusMessage;
        try {
          message = decode(data);
        } catch (e) {
          this.events.malformed?.(subject, e as Error);
          return;
        }
        handler(message, reply);
      },
      queue,
    );
  }

  /** A subject only this process listens on, for replies. */
  inbox(): string {
    return `_INBOX.c1m.${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  }

  /** One request, one reply (admin commands, backends sending over the bus). */
  async request(subject: string, message: BusMessage, timeoutMs = 2000): Promise<BusMessage> {
    return decode(await this.nc.request(subject, encode(message), timeoutMs));
  }

  /** host:port of the NATS server. */
  get server(): string {
    return this.nc.server;
  }

  /** Sends what is buffered, then closes. */
  async close(): Promise<void> {
    await this.nc.close();
  }
}
