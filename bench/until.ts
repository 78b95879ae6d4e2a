import { setTimeout as sleep } from 'node:timers/promises';

/** What a check gives while its condition does not hold yet. */
type NotYet = undefined | null | false | 0 | '';

/**
 * The one polling helper, for benches and tests: polls `check` until it gives a truthy value, and resolves with it.
 * A check that throws (a process restarting, an assertion not met yet) counts as "not yet"; its last error is in the
 * timeout's message. The deadline is on performance.now(), which a test faking Date does not stop.
 */
export async function until<T>(what: string, check: () => Promise<T | NotYet> | T | NotYet, timeoutMs = 20_000, everyMs = 25): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = '';
    } catch (err) {
      last = ` (last error: ${(err as Error).message})`;
    }
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last}`);
    await sleep(everyMs);
  }
}
