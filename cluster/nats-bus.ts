/**
 * The bus over NATS (an existing broker, Debian's nats-server) through our
 * own minimal client (./nats.ts), carrying BusMessage values encoded with
 * msgpack.
 */
import { dispatch, type Bus, type BusEvents, type BusHandler } from './bus.js';
import { decode, encode, type BusMessage } from './messages.js';
import { NatsClient } from './nats.js';

export class NatsBus implements Bus {
  private constructor(
    private readonly nc: NatsClient,
    private readonly events: BusEvents,
  ) {}

  /**
   * Connects. A process of the cluster (`persistent`) waits and reconnects for
   * ever rather than dying with NATS; a one-off command fails at once.
   */
  static async connect(servers: string, name: string, events: BusEvents = {}, persistent = true): Promise<NatsBus> {
    const warning = events.warning ?? ((message: string) => console.warn(`${name}: ${message}`));
    const nc = await NatsClient.connect(servers.split(','), {
      name,
      persistent,
      reconnected: () => events.reconnected?.(),
      warning,
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
      (data, reply) => {
        // An empty payload is NATS's own "no responders" status on a reply subject, not a c1m message.
        if (data.length > 0) dispatch(subject, data, reply, handler, this.events);
      },
      queue,
    );
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
