import { describe, expect, it } from 'vitest';
import { loadNativeUws } from '../server/uws.js';
import { openStore } from '../index.js';
import { runCli } from './helpers.js';

describe('native modules', () => {
  it('loads the native uWebSockets.js and better-sqlite3 builds', () => {
    const uws = loadNativeUws();
    expect(Function.prototype.toString.call(uws.App)).toContain('[native code]');
    const store = openStore(':memory:');
    expect(store.db.prepare('SELECT sqlite_version()').pluck().get()).toMatch(/^3\./);
    store.close();
    const loaded = process.report.getReport() as { sharedObjects: string[] };
    expect(loaded.sharedObjects.some((p) => p.endsWith('better_sqlite3.node'))).toBe(true);
    expect(loaded.sharedObjects.some((p) => /uws_linux_x64_\d+\.node$/.test(p))).toBe(true);
  });

  it("refuses to start on uWebSockets.js's pure-JS fallback", async () => {
    const run = await runCli(['server', '--db', ':memory:', '--port', '0', '--api-port', '0'], { env: { UWS_USE_FALLBACK: '1' } });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('fell back to its pure-JS implementation');
    expect(run.stderr).toContain('refuses to run');
    expect(run.stdout).not.toContain('c1m listening');
  });
});
