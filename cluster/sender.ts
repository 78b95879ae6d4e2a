/**
 * A backend's sends over the bus (with backend.creds): to any router on
 * `c1m.send` until it knows the cluster's partitions, then straight to the
 * leader of the subject's partition on `c1m.send.<p>`, one hop instead of
 * two. It learns the partitions from the routers' answers (`sent` says them
 * where there are several), or is told them.
 */
import type { Sent } from '../router/router.js';
import { partitionOfSend } from '../subsmanager/partitions.js';
import type { Subject } from '../subsmanager/subjects.js';
import type { Bus } from './bus.js';
import { SUBJECTS } from './messages.js';

export interface BusSenderOptions {
  /** The cluster's partitions (`--partitions`), if known; else learned from the first answer. */
  partitions?: number;
  /** How long a send waits for its answer (default 5 s: a partition's hand-over takes up to the lease's 2 s). */
  timeoutMs?: number;
}

/** A send the routers refused or did not answer: nothing was numbered or delivered. */
class BusSendError extends Error {
  override name = 'BusSendError';
}

export class BusSender {
  private partitions: number;

  constructor(
    private readonly bus: Bus,
    private readonly options: BusSenderOptions = {},
  ) {
    this.partitions = options.partitions ?? 1;
  }

  /**
   * Sends `message` to `subject`; resolves with how many streams took it and its id, as the HTTP API answers. With an
   * idempotency `key` (as the Idempotency-Key header), a send that was kept already is answered `duplicate` with its id.
   */
  async send(subject: Subject, message: string | Uint8Array, key?: string): Promise<Sent> {
    const partitions = this.partitions;
    const target = partitions > 1 ? SUBJECTS.sendIn(partitionOfSend(subject, partitions)) : SUBJECTS.send;
    const reply = await this.request(target, subject, message, key).catch((err: Error) => {
      // Nobody leads that partition this instant (a hand-over), and nobody got it: any router takes it and waits for the
      // new leader. Never after a timeout: the leader may have numbered it, and it would be sent twice.
      if (target === SUBJECTS.send || !/no responders/.test(err.message)) throw err;
      return this.request(SUBJECTS.send, subject, message, key);
    });
    if (reply.t !== 'sent') throw new BusSendError(`a router answered a send with a ${reply.t}`);
    this.partitions = reply.partitions ?? 1;
    // Refused where this sender counted the partitions wrong (nothing numbered): again, with the cluster's count.
    if (reply.error !== undefined && this.partitions !== partitions) return this.send(subject, message, key);
    if (reply.error !== undefined) throw new BusSendError(reply.error);
    return { delivered: reply.delivered, ...(reply.id !== undefined && { id: reply.id }), ...(reply.duplicate && { duplicate: true }) };
  }

  private request(target: string, subject: Subject, message: string | Uint8Array, key?: string) {
    return this.bus.request(target, { t: 'send', user: subject, message, ...(key !== undefined && { key }) }, this.options.timeoutMs ?? 5000).catch((err: Error) => {
      throw new BusSendError(`no answer from ${target}: ${err.message}`);
    });
  }
}
