/**
 * Requests of a NATS client (see nats.ts) on one wildcard inbox subscription
 * shared by all, as nats.js's request mux does: each request's reply subject
 * is the inbox and its own token, and the reply's token finds its request.
 */

interface Pending {
  subject: string;
  resolve: (data: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class RequestMux {
  private readonly requests = new Map<string, Pending>();
  private nextToken = 1;

  /** `prefix`: the inbox's subject and a dot; the client subscribes to `${prefix}*` and hands each reply to answer(). */
  constructor(readonly prefix: string) {}

  /**
   * A request to `subject`, failed after `timeoutMs` without a reply: `publish` sends it with its reply subject
   * (a publish that throws fails the request).
   */
  request(subject: string, timeoutMs: number, publish: (replyTo: string) => void): Promise<Uint8Array> {
    const token = String(this.nextToken++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.requests.delete(token);
        reject(new Error(`no reply from ${subject} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.requests.set(token, { subject, resolve, reject, timer });
      try {
        publish(this.prefix + token);
      } catch (err) {
        this.settle(token)?.reject(err as Error);
      }
    });
  }

  /** A reply on the inbox: its request's answer, or its failure where the server says nobody listens (a 503 status). */
  answer(replySubject: string, data: Uint8Array, status: string | undefined): void {
    const pending = this.settle(replySubject.slice(this.prefix.length));
    // 503: the server says nobody subscribes to the subject, at once rather than at the timeout.
    if (status === '503') pending?.reject(new Error(`no responders on ${pending.subject}`));
    else pending?.resolve(data);
  }

  /** Fails every request still waiting, saying `why`. */
  failAll(why: string): void {
    for (const token of [...this.requests.keys()]) this.settle(token)!.reject(new Error(why));
  }

  private settle(token: string): Pending | undefined {
    const pending = this.requests.get(token);
    if (!pending) return undefined;
    clearTimeout(pending.timer);
    this.requests.delete(token);
    return pending;
  }
}
