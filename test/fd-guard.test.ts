/**
 * FdGuard in a process of its own whose open-file limit is lowered to 300
 * (prlimit), so that running out is cheap: it pauses when the process cannot
 * open a descriptor, resumes (not paused while its resume callback runs, which
 * an edge asks) once descriptors are free, and checks only while watched.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const limits = fileURLToPath(new URL('../dist/server/limits.js', import.meta.url));
const untilJs = fileURLToPath(new URL('../dist/bench/until.js', import.meta.url));

const script = `
import { openSync, closeSync } from 'node:fs';
const { FdGuard } = await import(${JSON.stringify(limits)});
const { until } = await import(${JSON.stringify(untilJs)});
const INTERVAL_MS = 20;
/** n ticks of a timer of the guard's interval started after the guard's: a running guard timer fires before each. */
const ticks = (n) => new Promise((resolve) => { let left = n; const t = setInterval(() => --left === 0 && (clearInterval(t), resolve()), INTERVAL_MS); });
const events = [];
const guard = new FdGuard(() => events.push('pause'), () => (events.push(guard.paused ? 'resume while paused' : 'resume'), true), INTERVAL_MS);
const exhaust = () => { const held = []; try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {} return held; };
let held = exhaust();
await until('the pause', () => guard.paused);
held.forEach((fd) => closeSync(fd));
await until('the resume', () => events.length === 2);
const pausedAfter = guard.paused;
guard.watch(false);
held = exhaust();
await ticks(3);
const pausedUnwatched = guard.paused;
held.forEach((fd) => closeSync(fd));
guard.close();
console.log(JSON.stringify({ events, pausedAfter, pausedUnwatched }));
`;

it('pauses when out of descriptors, resumes once they are free (not paused during resume), and does not check while unwatched', async () => {
  const { stdout } = await promisify(execFile)('prlimit', ['--nofile=300:300', process.execPath, '--input-type=module', '-e', script], { timeout: 30_000 });
  expect(JSON.parse(stdout)).toEqual({ events: ['pause', 'resume'], pausedAfter: false, pausedUnwatched: false });
});
