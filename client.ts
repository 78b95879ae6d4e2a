/**
 * The backend's client of c1m's HTTP API (`import { C1mClient } from 'c1m'`):
 * send messages, manage subscriptions, mint stream tokens for users' pages.
 * It lives beside index.ts, outside server/: it is what a backend runs, a
 * client of the API that server/api.ts serves, and uses only server/auth.ts.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { mintStreamToken } from './server/auth.js';
import type { Pair } from './subsmanager/pairs.js';
import type { Subject } from './subsmanager/subjects.js';
import type { Sent } from './router/router.js';
import type { SharedStats } from './server/server.js';

export type { Sent };

export interface C1mClientOptions {
  /** The backend API, e.g. http://127.0.0.1:8001 (a `c1m server` or a router of a cluster). */
  url: string;
  /** The API's bearer token (--token), if it has one. */
  token?: string;
  /** The servers' --stream-secret, to mint stream tokens here. */
  streamSecret?: string;
  /** Sends in flight at most in sendMany. Default 16. */
  concurrency?: number;
  /**
   * Whether sends carry an Idempotency-Key and are tried again (default true). A server with --history-seconds 0
   * refuses keys (400): set false for it; its sends are then tried once, as a retry could deliver one twice.
   */
  idempotent?: boolean;
  /** How many times `send` tries again, with the same Idempotency-Key, after a 503, a timeout or a lost connection. Default 4. */
  retries?: number;
  /** The wait before the first retry, doubled for each next one (ms). Default 250. */
  retryDelayMs?: number;
  /** How long one request (any of them, a send's each try) waits for its answer (ms). Default 10,000. */
  timeoutMs?: number;
}

export interface SendOptions {
  /** The send's Idempotency-Key (1 to 64 of A-Z a-z 0-9 . _ : -); default a random UUID. */
  key?: string;
}

/** An answer other than 2xx: `status`, and the server's own explanation in the message. */
export class C1mError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(`c1m API ${status}: ${message}`);
    this.name = new.target.name;
  }
}
/** 401: missing or wrong API token. */
export class C1mUnauthorized extends C1mError {}
/** 413: a message over --max-message, or a body over --max-body. */
export class C1mTooLarge extends C1mError {}
/** 429: a proxy in front of the API limits the rate (c1m has no rate limit of its own); retry later. */
export class C1mRateLimited extends C1mError {}
/** 503: the store was busy (another process held its write lock) and nothing changed, or a send's router could not keep it now; retry (`send` does, with its key). */
export class C1mUnavailable extends C1mError {}

const ERRORS: Record<number, typeof C1mError> = { 401: C1mUnauthorized, 413: C1mTooLarge, 429: C1mRateLimited, 503: C1mUnavailable };

export class C1mClient {
  private readonly url: string;

  constructor(private readonly options: C1mClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
  }

  /**
   * Sends `message` to `subject` (a user id, `user:5`, or a topic such as `photo:789`): to the user itself and to the
   * subject's subscribers; resolves with how many streams took it, and its id where the server keeps a history.
   * Each send has an Idempotency-Key (the caller's, or a random one), and one whose answer did not come (503, a timeout,
   * a connection lost) is tried again with it `retries` times, waiting retryDelayMs, twice that, and so on: a send that
   * was kept after all is then answered `duplicate: true` with its id, never delivered twice. With `idempotent: false`
   * (a server without a history refuses keys), no key and no retry.
   */
  async send(subject: Subject, message: string | Uint8Array, options: SendOptions = {}): Promise<Sent> {
    const idempotent = this.options.idempotent ?? true;
    const headers: Record<string, string> = idempotent ? { 'idempotency-key': options.key ?? randomUUID() } : {};
    const retries = idempotent ? (this.options.retries ?? 4) : 0;
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this.request('POST', `/send/${encodeURIComponent(subject)}`, message, headers)) as Sent;
      } catch (err) {
        if (attempt >= retries || !unanswered(err)) throw err;
        await sleep((this.options.retryDelayMs ?? 250) * 2 ** attempt);
      }
    }
  }

  /** Sends each message in order of its start, `concurrency` at a time; resolves with each one's answer. The first failure rejects. */
  async sendMany(messages: { user: Subject; message: string | Uint8Array }[]): Promise<Sent[]> {
    const delivered: Sent[] = new Array(messages.length);
    let next = 0;
    const worker = async () => {
      while (next < messages.length) {
        const i = next++;
        delivered[i] = await this.send(messages[i].user, messages[i].message);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency ?? 16, messages.length) }, worker));
    return delivered;
  }

  /** Adds [subscriber, subject] pairs (a subject: a user id or a topic); resolves with how many were new. */
  async subscribe(pairs: Pair[]): Promise<number> {
    return ((await this.request('POST', '/subscriptions', JSON.stringify(pairs))) as { added: number }).added;
  }

  /** Removes pairs; resolves with how many existed. */
  async unsubscribe(pairs: Pair[]): Promise<number> {
    return ((await this.request('DELETE', '/subscriptions', JSON.stringify(pairs))) as { removed: number }).removed;
  }

  /** Who hears what is sent to `subject` (a user id or a topic). */
  async subscribers(subject: Subject): Promise<number[]> {
    return (await this.request('GET', `/subscribers/${encodeURIComponent(subject)}`)) as number[];
  }

  /** The users (as integers) and topics `user` hears. */
  async subscriptions(user: number): Promise<Subject[]> {
    return (await this.request('GET', `/subscriptions/${user}`)) as Subject[];
  }

  /** The counters a single server and a cluster's router both give (a router's carry more: cluster/router-process.ts RouterStats). */
  async stats(): Promise<SharedStats> {
    return (await this.request('GET', '/stats')) as SharedStats;
  }

  /**
   * A token that opens `user`'s stream on any transport for `ttlSeconds`, listening to `topics` if it asks (each
   * `kind:id`, or `kind:*` for any of a kind), signed here with the stream secret: no call to c1m.
   */
  streamToken(user: number, ttlSeconds = 3600, topics: readonly string[] = []): string {
    if (!this.options.streamSecret) throw new Error('streamToken needs the servers\' --stream-secret as streamSecret');
    return mintStreamToken(this.options.streamSecret, user, ttlSeconds, Date.now(), topics);
  }

  private async request(method: string, path: string, body?: string | Uint8Array, extra: Record<string, string> = {}): Promise<unknown> {
    const headers: Record<string, string> = this.options.token ? { ...extra, authorization: `Bearer ${this.options.token}` } : extra;
    const res = await fetch(this.url + path, { method, body: body as BodyInit | undefined, headers, signal: AbortSignal.timeout(this.options.timeoutMs ?? 10_000) });
    const text = await res.text();
    if (res.ok) return JSON.parse(text);
    let message = text;
    try {
      message = (JSON.parse(text) as { error?: string }).error ?? text;
    } catch {
      // not JSON: a proxy's page, kept as it came
    }
    throw new (ERRORS[res.status] ?? C1mError)(res.status, message.trim());
  }
}

/** A request that got no answer, or a 503: the server may or may not have kept it; a retry with the same key is safe. */
function unanswered(err: unknown): boolean {
  if (err instanceof C1mUnavailable) return true;
  // fetch's own failures: 'fetch failed' for a connection refused, reset or closed before the answer (not a bad URL,
  // which fails alike each time); a TimeoutError for AbortSignal.timeout.
  return (err instanceof TypeError && err.message === 'fetch failed') || (err instanceof DOMException && err.name === 'TimeoutError');
}
