import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const script = (name: string) => join(import.meta.dirname, '..', 'scripts', name);
const run = (name: string, args: string[]) => spawnSync('bash', [script(name), ...args], { encoding: 'utf8' });

describe('scripts/sysctl.sh', () => {
  it('applies what it can, names each key it could not set and why, and exits non-zero', () => {
    // Only harmless lines: a key set to the value it already has, an unknown key, a read-only key, a malformed line.
    const somaxconn = readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim();
    const file = join(tempDir(), 'sysctl.conf');
    writeFileSync(file, `# comment\n\nnet.core.somaxconn = ${somaxconn}\nnet.ipv4.no_such_key = 1\nfs.file-nr = 0 0 0\nnot a setting\n`);
    const { status, stdout } = run('sysctl.sh', [file]);
    expect(status).toBe(1);
    expect(stdout).toContain(`ok   net.core.somaxconn = ${somaxconn}`);
    expect(stdout).toMatch(/FAIL net\.ipv4\.no_such_key: unknown key/);
    expect(stdout).toMatch(/FAIL fs\.file-nr: cannot write 0 0 0: \S+/);
    expect(stdout).toMatch(/FAIL .*sysctl\.conf:6: not 'key = value'/);
    expect(stdout).toContain('1 applied, 3 failed');
  });

  it('exits 0 when every key applied', () => {
    const file = join(tempDir(), 'sysctl.conf');
    writeFileSync(file, `net.core.somaxconn = ${readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim()}\n`);
    expect(run('sysctl.sh', [file]).status).toBe(0);
  });

  it('refuses a file it cannot read', () => {
    const { status, stderr } = run('sysctl.sh', ['/nonexistent/sysctl.conf']);
    expect(status).toBe(2);
    expect(stderr).toContain('usage');
  });
});

describe('scripts/virtual-ips.sh', () => {
  it('prints the ip commands for consecutive addresses, crossing an octet', () => {
    const up = run('virtual-ips.sh', ['up', 'eth0', '3', '10.0.0.254/24', '--dry-run']);
    expect(up.status).toBe(0);
    expect(up.stdout.trim().split('\n')).toEqual(['ip addr add 10.0.0.254/24 dev eth0', 'ip addr add 10.0.0.255/24 dev eth0', 'ip addr add 10.0.1.0/24 dev eth0']);
    const down = run('virtual-ips.sh', ['down', 'eth1', '2', '192.168.5.1', '--dry-run']);
    expect(down.stdout.trim().split('\n')).toEqual(['ip addr del 192.168.5.1/32 dev eth1', 'ip addr del 192.168.5.2/32 dev eth1']);
  });

  it('says loopback needs nothing', () => {
    const { status, stdout } = run('virtual-ips.sh', ['up', 'lo', '40', '127.0.1.1']);
    expect(status).toBe(0);
    expect(stdout).toContain('127.0.0.0/8 is already local');
  });

  it('rejects bad arguments with its usage', () => {
    for (const args of [['sideways', 'eth0', '1', '10.0.0.1'], ['up', 'eth0', '0', '10.0.0.1'], ['up', 'eth0', '2', '10.0.0.300'], ['up', 'eth0', '2']]) {
      const { status, stderr } = run('virtual-ips.sh', [...args, '--dry-run']);
      expect(status).toBe(2);
      expect(stderr).toContain('usage');
    }
  });
});
