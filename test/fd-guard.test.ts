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

const script = `
import { openSync, closeSync } from 'node:fs';
const { FdGuard } = await import(${JSON.stringify(limits)});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const events = [];
const guard = new FdGuard(() => events.push('pause'), () => (events.push(guard.paused ? 'resume while paused' : 'resume'), true), 20);
const exhaust = () => { const held = []; try { for (;;) held.push(openSync('/dev/null', 'r')); } catch {} return held; };
let held = exhaust();
await sleep(200);
const pausedWhenOut = guard.paused;
held.forEach((fd) => closeSync(fd));
await sleep(200);
const pausedAfter = guard.paused;
guard.watch(false);
held = exhaust();
await sleep(200);
const pausedUnwatched = guard.paused;
held.forEach((fd) => closeSync(fd));
guard.close();
console.log(JSON.stringify({ events, pausedWhenOut, pausedAfter, pausedUnwatched }));
`;

it('pauses when out of descriptors, resumes once they are free (not paused during resume), and does not check while unwatched', async () => {
  const { stdout } = await promisify(execFile)('prlimit', ['--nofile=300:300', process.execPath, '--input-type=module', '-e', script], { timeout: 20_000 });
  expect(JSON.parse(stdout)).toEqual({ events: ['pause', 'resume'], pausedWhenOut: true, pausedAfter: false, pausedUnwatched: false });
});
