/**
 * The one polling helper (bench/until.ts), which benches and tests wait with: what counts as done, what its timeout
 * says, and that a test faking Date cannot stop its deadline.
 */
import { afterEach, expect, it, vi } from 'vitest';
import { until } from '../bench/until.js';

afterEach(() => {
  vi.useRealTimers();
});

it('resolves with the first truthy value; a falsy one, or a throw, is "not yet"', async () => {
  const notYet = [undefined, null, false, 0, ''];
  let calls = 0;
  const value = await until(
    'the seventh call',
    () => {
      calls++;
      if (calls === 3) throw new Error('restarting');
      return calls > 6 ? { calls } : notYet[calls % notYet.length];
    },
    1000,
    1,
  );
  expect(value).toEqual({ calls: 7 });
});

it('times out naming what it waited for and the last error, which a later check that does not throw clears', async () => {
  const assertion = () => {
    expect(2).toBe(1);
    return true;
  };
  await expect(until('two to be one', assertion, 50, 5)).rejects.toThrow(/^timed out after 50 ms waiting for two to be one \(last error: expected 2 to be 1/);
  let calls = 0;
  const throwsOnce = () => {
    if (++calls === 1) throw new Error('once');
    return false;
  };
  await expect(until('nothing', throwsOnce, 50, 5)).rejects.toThrow(/^timed out after 50 ms waiting for nothing$/);
});

it('keeps its deadline while a test fakes Date', async () => {
  vi.useFakeTimers({ toFake: ['Date'] });
  await expect(until('what never comes', () => false, 50, 5)).rejects.toThrow('timed out after 50 ms');
}, 2000);
