/**
 * The bus between c1m processes: NATS (an existing broker, Debian's
 * nats-server), carrying BusMessage values encoded with msgpack. Everything
 * above this file sees only publish/subscribe of typed messages.
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { decode, encode, type BusMessage } from './messages.js';

export type BusHandler = (message: BusMessage, replyTo: string | undefined) => void;

export interface BusEvents {
  /** The connection to NATS came back after an outage: state may have been missed. */
  reconnected?: () => void;
  /** A payload that is not a c1m message arrived (logged, never fatal). */
  malformed?: (subject: string, err: Error) => void;
}

export class Bus {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly events: BusEvents,
  ) {
    void this.watch();
  }

  /**
   * Connects. A process of the cluster (`persistent`) waits and reconnects for
   * ever rather than dying with NATS; a one-off command fails at once.
   */
  static async connect(servers: string, name: string, events: BusEvents = {}, persistent = true): Promise<Bus> {
    const nc = await connect({
      servers: servers.split(','),
      name,
      waitOnFirstConnect: persistent,
      maxReconnectAttempts: persistent ? -1 : 0,
      reconnectTimeWait: 250,
      // A dead server is noticed within a few seconds, not minutes.
      pingInterval: 2000,
      maxPingOut: 2,
    });
    return new Bus(nc, events);
  }

  /** Publishes; while reconnecting the client buffers, and once closing (shutdown) the message is dropped. */
  publish(subject: string, message: BusMessage, replyTo?: string): void {
    if (this.nc.isClosed() || this.nc.isDraining()) return;
    this.nc.publish(subject, encode(message), replyTo ? { reply: replyTo } : undefined);
  }

  /** Subscribes; with `queue`, each message goes to one member of the group (routers sharing sends). */
  subscribe(subject: string, handler: BusHandler, queue?: string): void {
    this.nc.subscribe(subject, {
      queue,
      callback: (err, msg) => {
        // An empty payload is NATS's own "no responders" status on a reply subject, not a c1m message.
        if (err || msg.data.length === 0) return;
        let message: BusMessage;
        try {
          message = decode(msg.data);
        } catch (e) {
          this.events.malformed?.(subject, e as Error);
          return;
        }
        handler(message, msg.reply);
      },
    });
  }

  /** A subject only this process listens on, for replies. */
  inbox(): string {
    return `_INBOX.c1m.${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  }

  /** One request, one reply (admin commands, backends sending over the bus). */
  async request(subject: string, message: BusMessage, timeoutMs = 2000): Promise<BusMessage> {
    const reply = await this.nc.request(subject, encode(message), { timeout: timeoutMs });
    return decode(reply.data);
  }

  get server(): string {
    return this.nc.getServer();
  }

  /** Sends what is buffered, then closes. */
  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }

  private async watch(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (status.type === 'reconnect') this.events.reconnected?.();
    }
  }
}
