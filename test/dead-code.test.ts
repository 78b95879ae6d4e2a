/**
 * The dead-code check: knip, with the entry points knip.json lists, finds no file, export, type or dependency that
 * nothing uses. Here so that `npm test`, and so CI, runs it.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';

it('knip finds no unused file, export, type or dependency', () => {
  const knip = spawnSync('npx', ['--no', 'knip', '--no-progress'], { cwd: join(import.meta.dirname, '..'), encoding: 'utf8', timeout: 150_000 });
  expect(knip.status, `${knip.stdout}${knip.stderr}${knip.error?.message ?? ''}`).toBe(0);
}, 180_000);
