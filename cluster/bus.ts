/**
 * The bus between c1m processes, as the edges, routers and admin see it:
 * typed publish/subscribe/request of BusMessage values. NatsBus
 * (./nats-bus.ts) carries them over an existing NATS server; MemoryBus
 * carries them between Bus objects of one process, for tests of the parts
 * above it without a broker.
 */
import { decode, encode, type BusMessage } from './messages.js';

/** `subject` is the one the message came on (a wildcard subscription's match): who may publish there is nats-server's to check. */
export type BusHandler = (message: BusMessage, replyTo: string | undefined, subject: string) => void;

export interface Bus {
  /** Publishes; a message that cannot be sent (too large, bus closed) is reported to the bus's warning, never thrown into the caller's loop. */
  publish(subject: string, message: BusMessage, replyTo?: string): void;
  /** Subscribes (`*` matches one subject token); with `queue`, each message goes to one member of the group (routers sharing sends). */
  subscribe(subject: string, handler: BusHandler, queue?: string): void;
  /** Ends this bus's subscriptions to `subject`: nothing more arrives on it (a partition handed to another router). */
  unsubscribe(subject: string): void;
  /** One request, one reply (admin commands, backends sending over the bus). */
  request(subject: string, message: BusMessage, timeoutMs?: number): Promise<BusMessage>;
  /** A subject only this process listens on, for replies. */
  inbox(): string;
  /** The largest encoded message the bus carries. */
  readonly maxPayload: number;
  /** Where the bus is, for logs. */
  readonly server: string;
  /** Sends what is buffered, then closes. */
  close(): Promise<void>;
}

export interface BusEvents {
  /** The connection came back after an outage: state may have been missed. */
  reconnected?: () => void;
  /** A payload that is not a c1m message arrived, on `subject`, with the reply subject it asked to be answered on (dropped, never fatal). */
  malformed?: (subject: string, err: Error, replyTo: string | undefined) => void;
  /** The connection's own trouble (an -ERR, a lost connection, a publish refused, a handler that threw); stderr by default. */
  warning?: (message: string) => void;
}

/** Runs a subscriber's handler on one decoded payload; bad payloads and handlers that throw are reported, never passed up. */
export function dispatch(subject: string, data: Uint8Array, reply: string | undefined, handler: BusHandler, events: BusEvents): void {
  let message: BusMessage;
  try {
    message = decode(data);
  } catch (e) {
    events.malformed?.(subject, e as Error, reply);
    return;
  }
  try {
    handler(message, reply, subject);
  } catch (e) {
    events.warning?.(`a handler of ${subject} (${message.t}) threw: ${(e as Error).stack ?? e}`);
  }
}

interface MemorySubscription {
  bus: MemoryBus;
  subject: string;
  handler: BusHandler;
  queue?: string;
}

/** NATS's matching of a subscription's subject: `*` stands for one token. */
function subjectMatches(pattern: string, subject: string): boolean {
  const want = pattern.split('.');
  const got = subject.split('.');
  return want.length === got.length && want.every((token, i) => token === '*' || token === got[i]);
}

/** The broker of MemoryBus: the subscriptions of every bus attached to it. */
export class MemoryBroker {
  readonly subscriptions: MemorySubscription[] = [];
  private nextQueueMember = 0;
  /** Payloads published so far, by subject (what a test may inspect). */
  readonly published: { subject: string; message: BusMessage }[] = [];

  constructor(readonly maxPayload = 1024 * 1024) {}

  connect(events: BusEvents = {}): MemoryBus {
    return new MemoryBus(this, events);
  }

  /** Delivers one payload as NATS would: to every plain subscriber of the subject and to one member of each queue group, on a later turn. */
  route(subject: string, data: Uint8Array, reply: string | undefined): void {
    this.published.push({ subject, message: decode(data) });
    const matching = this.subscriptions.filter((s) => subjectMatches(s.subject, subject) && !s.bus.closed);
    const groups = new Map<string, MemorySubscription[]>();
    const picked: MemorySubscription[] = [];
    for (const s of matching) {
      if (s.queue === undefined) picked.push(s);
      else groups.set(s.queue, [...(groups.get(s.queue) ?? []), s]);
    }
    for (const members of groups.values()) picked.push(members[this.nextQueueMember++ % members.length]);
    // A copy each, decoded by each receiver, as over a network.
    for (const s of picked) setImmediate(() => !s.bus.closed && dispatch(subject, Uint8Array.from(data), reply, s.handler, s.bus.events));
  }
}

let inboxes = 0;

export class MemoryBus implements Bus {
  closed = false;
  readonly server = 'memory';

  constructor(
    private readonly broker: MemoryBroker,
    readonly events: BusEvents,
  ) {}

  get maxPayload(): number {
    return this.broker.maxPayload;
  }

  publish(subject: string, message: BusMessage, replyTo?: string): void {
    if (this.closed) return;
    const data = encode(message);
    if (data.length > this.broker.maxPayload) {
      this.events.warning?.(`a ${message.t} of ${data.length} bytes is over the bus's max payload (${this.broker.maxPayload}): not sent`);
      return;
    }
    this.broker.route(subject, data, replyTo);
  }

  subscribe(subject: string, handler: BusHandler, queue?: string): void {
    this.broker.subscriptions.push({ bus: this, subject, handler, queue });
  }

  unsubscribe(subject: string): void {
    const { subscriptions } = this.broker;
    for (let i = subscriptions.length - 1; i >= 0; i--) if (subscriptions[i].bus === this && subscriptions[i].subject === subject) subscriptions.splice(i, 1);
  }

  request(subject: string, message: BusMessage, timeoutMs = 2000): Promise<BusMessage> {
    const inbox = this.inbox();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply from ${subject} within ${timeoutMs} ms`)), timeoutMs);
      this.subscribe(inbox, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      this.publish(subject, message, inbox);
    });
  }

  inbox(): string {
    return `_INBOX.memory.${++inboxes}`;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
