/**
 * The registry (router/registry.ts) as its own contract: one connection of a user and several (held as a Set), the
 * per-user cap (--max-streams-per-user; the public listener checks it before admitting a stream, so only this test
 * sees a login past the cap refused with nothing changed), and connections that leave while a delivery or a
 * shutdown walks them.
 */
import { expect, it } from 'vitest';
import { Registry, type Connection } from '../index.js';

/** A connection that records what it was written and whether it was closed; `onWrite` runs inside each write. */
class Recorder implements Connection {
  readonly written: string[] = [];
  closed = 0;
  onWrite?: () => void;
  constructor(
    readonly user: number,
    readonly topics?: readonly string[],
  ) {}
  write(chunk: Buffer): number {
    this.written.push(chunk.toString());
    this.onWrite?.();
    return 1;
  }
  close(): void {
    this.closed++;
  }
}

/** A registry that logs what its observer is told, in order. */
function observed(maxPerUser?: number) {
  const told: string[] = [];
  const registry = new Registry(maxPerUser, { login: (s) => told.push(`in ${s}`), logout: (s) => told.push(`out ${s}`) });
  return { registry, told };
}

const counts = (registry: Registry, user: number) => ({ connections: registry.connections, users: registry.users, of: registry.connectionsOf(user), connected: registry.isConnected(user) });

it('holds a user with one connection: delivers to it, forgets it on logout, and a second logout changes nothing', () => {
  const { registry, told } = observed();
  const only = new Recorder(3, ['photo:1']);
  expect(registry.login(only)).toBe(true);
  expect(counts(registry, 3)).toEqual({ connections: 1, users: 1, of: 1, connected: true });
  expect(registry.deliver(3, Buffer.from('a'))).toBe(1);
  expect(registry.deliver(4, Buffer.from('nobody'))).toBe(0);
  expect(only.written).toEqual(['a']);
  expect(registry.everyConnectionUser()).toEqual([3]);
  expect(registry.listenersOf('photo:1')).toBe(1);
  registry.logout(only);
  registry.logout(only);
  expect(counts(registry, 3)).toEqual({ connections: 0, users: 0, of: 0, connected: false });
  expect(registry.listenersOf('photo:1')).toBe(0);
  expect(registry.deliver(3, Buffer.from('b'))).toBe(0);
  expect(told).toEqual(['in photo:1', 'in 3', 'out photo:1', 'out 3']); // its topics are told before its user, in and out
});

it('holds a user with several connections: each gets a delivery once, and logging one out keeps the others', () => {
  const { registry, told } = observed();
  const tabs = [new Recorder(5), new Recorder(5), new Recorder(5)];
  for (const tab of tabs) expect(registry.login(tab)).toBe(true);
  expect(counts(registry, 5)).toEqual({ connections: 3, users: 1, of: 3, connected: true });
  expect(registry.everyConnectionUser()).toEqual([5, 5, 5]);
  expect(registry.deliver(5, Buffer.from('all'))).toBe(3);
  registry.logout(tabs[1]);
  expect(registry.deliver(5, Buffer.from('two'))).toBe(2);
  expect(tabs.map((t) => t.written)).toEqual([['all', 'two'], ['all'], ['all', 'two']]);
  registry.logout(tabs[0]);
  registry.logout(tabs[2]);
  expect(counts(registry, 5)).toEqual({ connections: 0, users: 0, of: 0, connected: false });
  // A user back after all its connections left starts from one again.
  expect(registry.login(tabs[1])).toBe(true);
  expect(counts(registry, 5)).toEqual({ connections: 1, users: 1, of: 1, connected: true });
  expect(told).toEqual(['in 5', 'in 5', 'in 5', 'out 5', 'out 5', 'out 5', 'in 5']);
});

it.each([1, 2, 3])('with a cap of %i a user holds that many connections; the next login is refused and changes nothing', (cap) => {
  const { registry, told } = observed(cap);
  const held = Array.from({ length: cap }, () => new Recorder(7));
  for (const c of held) expect(registry.login(c)).toBe(true);
  expect(registry.login(held[0])).toBe(true); // one already in: not a new connection
  const extra = new Recorder(7, ['photo:9']);
  expect(registry.login(extra)).toBe(false);
  expect(counts(registry, 7)).toEqual({ connections: cap, users: 1, of: cap, connected: true });
  expect(registry.listenersOf('photo:9')).toBe(0); // a refused stream listens to nothing
  expect(told).toEqual(Array(cap).fill('in 7'));
  expect(registry.deliver(7, Buffer.from('x'))).toBe(cap);
  expect(extra.written).toEqual([]);
  expect(registry.login(new Recorder(8))).toBe(true); // another user is not held back
  registry.logout(held[0]);
  expect(registry.login(extra)).toBe(true);
  expect(registry.connectionsOf(7)).toBe(cap);
});

it('a delivery skips a connection logged out while it runs, and reaches the rest once', () => {
  const { registry } = observed();
  const [a, b, c] = [new Recorder(9), new Recorder(9), new Recorder(9)];
  for (const conn of [a, b, c]) registry.login(conn);
  // a's write drops b (as a slow consumer's close would) before the walk reaches it, and drops itself.
  a.onWrite = () => {
    registry.logout(b);
    registry.logout(a);
  };
  expect(registry.deliver(9, Buffer.from('m'))).toBe(2);
  expect([a, b, c].map((conn) => conn.written)).toEqual([['m'], [], ['m']]);
  expect(counts(registry, 9)).toEqual({ connections: 1, users: 1, of: 1, connected: true });
});

it('closeAll closes every connection once, also when each close logs itself out as a server stream does', () => {
  const { registry, told } = observed();
  const conns = [new Recorder(1), new Recorder(1), new Recorder(2, ['photo:4'])];
  for (const conn of conns) {
    registry.login(conn);
    const close = conn.close.bind(conn);
    conn.close = () => {
      close();
      registry.logout(conn);
    };
  }
  registry.closeAll();
  expect(conns.map((conn) => conn.closed)).toEqual([1, 1, 1]);
  expect({ connections: registry.connections, users: registry.users, listeners: registry.listenersOf('photo:4') }).toEqual({ connections: 0, users: 0, listeners: 0 });
  expect(told.filter((t) => t.startsWith('out'))).toEqual(['out 1', 'out 1', 'out photo:4', 'out 2']);
});
