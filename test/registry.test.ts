/**
 * The registry's per-user cap (--max-streams-per-user) as its own contract:
 * the public listener checks it before admitting a stream, so only this test
 * sees a login past the cap refused with nothing changed.
 */
import { expect, it } from 'vitest';
import { Registry, type Connection } from '../index.js';

const connection = (user: number): Connection => ({ user, write: () => 1, close: () => {} });

it.each([1, 2, 3])('with a cap of %i a user holds that many connections; the next login is refused and changes nothing', (cap) => {
  const registry = new Registry(cap);
  const held = Array.from({ length: cap }, () => connection(7));
  for (const c of held) expect(registry.login(c)).toBe(true);
  expect(registry.login(held[0])).toBe(true); // one already in: not a new connection
  const extra = connection(7);
  expect(registry.login(extra)).toBe(false);
  expect({ connections: registry.connections, of7: registry.connectionsOf(7), users: registry.users }).toEqual({ connections: cap, of7: cap, users: 1 });
  expect(registry.login(connection(8))).toBe(true); // another user is not held back
  registry.logout(held[0]);
  expect(registry.login(extra)).toBe(true);
  expect(registry.connectionsOf(7)).toBe(cap);
});
