/**
 * A stream of R3 on the simulated hosts' JetStream cluster, written and read with a router's credentials as
 * the replicated brain keeps its histories and store changes (issue 28): the fault run's check that the
 * cluster itself keeps every acknowledged message through a host's loss and a cut, whatever the routers do.
 * Message n holds the text `n` at sequence n, each published expecting the last sequence n - 1 (the fenced
 * publish of a partition's leader), so a message stored twice or under another number shows.
 */
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, nkeyAuthenticator, type NatsConnection } from '@nats-io/transport-node';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { BRAIN_SUBJECTS, readCreds, ROUTER_INBOX, serverIdentity } from '../cluster/nats-auth.js';
import { until } from './until.js';

const STREAM = 'C1M_FAULTS';
const SUBJECT = `${BRAIN_SUBJECTS}.faults`;

export class BrainStream {
  /** The sequence acknowledged last: messages 1..acked are in the stream. */
  acked = 0;
  /** While set, publishNext waits: a leader is being chosen (see lead()). */
  private holding = false;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
  ) {}

  /** Connects as a router (its credentials file, the servers' CA) to `servers` (comma-separated). */
  static async connect(servers: string, creds: string, ca: string): Promise<BrainStream> {
    const nc = await connect({
      servers: servers.split(','),
      authenticator: nkeyAuthenticator(new TextEncoder().encode(readCreds(creds).seed)),
      tls: { caFile: ca, ...serverIdentity(servers) },
      inboxPrefix: ROUTER_INBOX,
      // A server cut off is noticed within about 2 s, and the client moves to another.
      pingInterval: 1000,
      maxPingOut: 2,
      reconnectTimeWait: 200,
      maxReconnectAttempts: -1,
    });
    // No check of the JetStream account here: a server without a quorum cannot answer it.
    return new BrainStream(nc, await jetstreamManager(nc, { timeout: 2000, checkAPI: false }), jetstream(nc, { timeout: 2000 }));
  }

  /** Makes the stream, kept on `replicas` servers. */
  async create(replicas: number): Promise<void> {
    // The cluster's meta leader is elected a moment after the servers say they are ready.
    await until('the JetStream cluster to make the stream', () => this.jsm.streams.add({ name: STREAM, subjects: [SUBJECT], num_replicas: replicas }).catch(() => undefined), 30_000, 200);
  }

  /** One publish with no expectation, as a router cut off with its server might try: resolves with whether the stream took it. */
  async publishAnyway(): Promise<boolean> {
    return this.js.publish(SUBJECT, 'cut off').then(
      () => true,
      () => false,
    );
  }

  /**
   * Publishes the next message, expecting the last sequence it knows; resolves with true once the stream
   * acknowledged it, false if it could not tell within one attempt (no quorum, a server gone). A publish that
   * timed out may still have been stored: then the next attempt's expectation is refused and the stream's
   * last message, read back, tells.
   */
  async publishNext(): Promise<boolean> {
    while (this.holding) await sleep(20);
    const n = this.acked + 1;
    try {
      const ack = await this.js.publish(SUBJECT, String(n), { expect: { lastSequence: n - 1 } });
      if (ack.seq !== n || ack.duplicate) throw new Error(`message ${n} was stored at sequence ${ack.seq}${ack.duplicate ? ' as a duplicate' : ''}`);
      this.acked = n;
      return true;
    } catch (err) {
      if (!/wrong last sequence/.test((err as Error).message)) return false;
      const last = await this.jsm.streams.getMessage(STREAM, { last_by_subj: SUBJECT }).catch(() => null);
      if (last?.seq !== n || last.string() !== String(n)) throw new Error(`the stream's last message is ${last?.seq}: ${last?.string()}, not message ${n}`);
      this.acked = n;
      return true;
    }
  }

  /** What the stream's leader says of `server`'s copy: undefined while it is not among the replicas. */
  async replica(server: string): Promise<{ current: boolean; lag: number; leader: boolean } | undefined> {
    const { cluster } = await this.jsm.streams.info(STREAM);
    if (cluster?.leader === server) return { current: true, lag: 0, leader: true };
    const peer = cluster?.replicas?.find((r) => r.name === server);
    return peer && { current: peer.current, lag: peer.lag ?? 0, leader: false };
  }

  /** The server leading the stream, once it has one. */
  leader(): Promise<string> {
    return until('the stream to have a leader', async () => (await this.jsm.streams.info(STREAM).catch(() => undefined))?.cluster?.leader, 30_000, 100);
  }

  /**
   * Makes `server` the stream's leader: asks the leader to step down until the election picks it (a random
   * one of the others each time), at most `tries` times. Resolves with the number of step-downs. Each step-down
   * waits until `server` is current: one behind the writes (a loaded box) cannot win, and the try would be lost.
   */
  async lead(server: string, tries = 16): Promise<number> {
    // Writes held meanwhile: nats-server hands the lead only to a follower as far along as the leader, which one
    // just back from a fault is not while the writes go on.
    this.holding = true;
    try {
      return await this.stepDownsUntil(server, tries);
    } finally {
      this.holding = false;
    }
  }

  private async stepDownsUntil(server: string, tries: number): Promise<number> {
    for (let downs = 0; downs <= tries; downs++) {
      const leader = await this.leader();
      if (leader === server) return downs;
      await until(`${server} to be current`, async () => ((await this.replica(server).catch(() => undefined))?.current ? true : undefined), 10_000, 50).catch(() => undefined);
      await this.nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${STREAM}`, '', { timeout: 2000 }).catch(() => undefined);
      // A step-down the stream could not make (no other server current yet) leaves the leader as it was: try again.
      await until('the next leader', async () => {
        const next = (await this.jsm.streams.info(STREAM).catch(() => undefined))?.cluster?.leader;
        return next && next !== leader ? true : undefined;
      }, 5000, 100).catch(() => undefined);
    }
    throw new Error(`${server} was not elected the stream's leader in ${tries} step-downs`);
  }

  /**
   * Reads every sequence from the leader, up to the last acknowledged when it starts: those missing (the leader
   * says it has no such message), and those that do not hold their own number.
   */
  async check(): Promise<{ messages: number; missing: number; misnumbered: number; wrong: string[] }> {
    const { state } = await this.jsm.streams.info(STREAM);
    let [missing, misnumbered] = [0, 0];
    /** The first few misnumbered: `seq: what it holds`. */
    const wrong: string[] = [];
    const last = Math.max(this.acked, state.last_seq);
    for (let seq = 1; seq <= last; seq++) {
      // getMessage answers null for a message the stream does not have; a request that fails (a leader changing) is asked again.
      const message = await until(`message ${seq}`, () => this.jsm.streams.getMessage(STREAM, { seq }).then((m) => m ?? ('none' as const)), 30_000, 100);
      if (message === 'none') missing++;
      else if (message.string() !== String(seq) && misnumbered++ < 5) wrong.push(`${seq}: ${message.string()}`);
    }
    return { messages: state.messages, missing, misnumbered, wrong };
  }

  close(): Promise<void> {
    return this.nc.close();
  }
}

/**
 * `node dist/bench/brain-stream.js SERVERS CREDS CA ATTEMPTS`: from inside a host cut off with its nats-server,
 * ATTEMPTS publishes with no expectation; prints how many the stream took (the minority must take none).
 */
async function main(): Promise<void> {
  const [servers, creds, ca, attempts] = process.argv.slice(2);
  const stream = await BrainStream.connect(servers, creds, ca);
  let taken = 0;
  for (let i = 0; i < Number(attempts); i++) if (await stream.publishAnyway()) taken++;
  console.log(JSON.stringify({ attempts: Number(attempts), taken }));
  await stream.close();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: Error) => {
    console.error(`brain-stream: ${err.stack ?? err.message}`);
    process.exit(1);
  });
}
