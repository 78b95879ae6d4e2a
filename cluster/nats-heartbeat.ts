/**
 * A NATS connection's liveness check (see nats.ts), as nats.js keeps its
 * heartbeats apart: a PING every interval, and a connection that left
 * MAX_PINGS_OUT of them unanswered counts as dead.
 */

/** Unanswered PINGs after which the connection counts as dead. */
const MAX_PINGS_OUT = 2;

export class Heartbeat {
  private pingsOut = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs: number, ping: () => void, dead: () => void) {
    this.timer = setInterval(() => {
      if (this.pingsOut >= MAX_PINGS_OUT) return dead();
      this.pingsOut++;
      ping();
    }, intervalMs);
  }

  /** The server answered: it is alive. */
  pong(): void {
    this.pingsOut = 0;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
