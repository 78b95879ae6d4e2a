/**
 * The option table (server/options.ts) is the one definition of every option: these fail when an option is missing
 * from a command, from what `c1m cluster` hands its edges and routers, or from docs/options.md.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { optionsDoc } from '../cli/options-doc.js';
import { c1mProgram } from '../cli/program.js';
import { edgeChild, routerChild } from '../cluster/run.js';
import { clusterArgv } from '../loadgen/run.js';
import { COMMANDS, flagOf, optionsOf, SHARING_COMMANDS, type CommandName, type OptionEntry, type OptionsOf } from '../server/options.js';

/** A fresh `c1m` program's command `name` ('admin drain'), its action replaced so that a parse runs nothing. */
function commandOf(name: CommandName): Command {
  const command = name.split(' ').reduce((parent: Command, part) => parent.commands.find((c) => c.name() === part)!, c1mProgram('test'));
  return command.exitOverride().action(() => {});
}

/** Parses `argv` with command `name`, with `env` set meanwhile: the options, and where each came from. */
function parse(name: CommandName, argv: string[], env: Record<string, string> = {}) {
  const command = commandOf(name);
  const saved = Object.fromEntries(Object.keys(env).map((key) => [key, process.env[key]]));
  Object.assign(process.env, env);
  try {
    command.parse(argv, { from: 'user' });
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
  return { opts: command.opts() as Record<string, unknown>, source: (field: string) => command.getOptionValueSource(field) };
}

/** Text for an option that no default gives: its last choice, or a value that each parser takes. */
const SAMPLES: Record<string, string> = {
  host: '10.0.0.3',
  apiHost: '10.0.0.4',
  allowOrigin: 'https://app.example.com,https://other.example.com',
  db: '/tmp/c1m-options-test.db',
  nats: 'nats://10.0.0.1:4222',
  natsHost: '10.0.0.2',
  natsCreds: '/tmp/creds',
  natsCa: '/tmp/ca.pem',
  stateDir: '/tmp/state',
  edgeIdPrefix: 'rack-',
  streamSecret: 'a-stream-secret-of-32-characters',
  token: 'an-api-token',
  edgeTimeoutMs: '700',
  topicShare: '0.5',
};
const sampleArgv = (entry: OptionEntry): string[] => {
  if (!entry.flag.includes('<')) return [flagOf(entry)];
  return [flagOf(entry), entry.choices?.at(-1) ?? SAMPLES[entry.name] ?? '3'];
};

describe('the option table', () => {
  it.each(COMMANDS)('gives c1m %s all its options, under their table names', (name) => {
    const options = commandOf(name).options;
    expect(options.map((o) => o.long)).toEqual(optionsOf(name).map(flagOf));
    expect(options.map((o) => o.attributeName())).toEqual(optionsOf(name).map((e) => e.name));
  });

  it.each(SHARING_COMMANDS)('gives c1m %s the options it shares', (name) => {
    const flags = commandOf(name).options.map((o) => o.long);
    expect(optionsOf(name).map(flagOf).filter((flag) => !flags.includes(flag))).toEqual([]);
  });

  it('parses every option of c1m cluster from its command line', () => {
    const { opts, source } = parse('cluster', optionsOf('cluster').flatMap(sampleArgv));
    const fromDefault = optionsOf('cluster').filter((e) => source(e.name) !== 'cli');
    expect(fromDefault.map((e) => e.flag)).toEqual([]);
    expect(opts).toMatchObject({ heartbeatSeconds: 3, cacheMiB: 3, mmapMiB: 3, edgeTimeoutMs: 700, warmCache: true, router: false, contentType: 'html' });
  });

  const bus = { nats: 'nats://10.0.0.9:4222,nats://10.0.0.8:4222', natsCreds: '/tmp/own.creds', natsCa: '/tmp/own-ca.pem', busInsecure: true };
  /** What c1m cluster sets for each child itself. */
  const OWN = {
    router: { db: '/tmp/c1m.router-1.db', apiPort: 8101, ...bus },
    edge: { id: 'rack-1', port: 9001, agentPort: 7001, presenceMs: 9, sharePort: true, ...bus },
  };

  it.each(['router', 'edge'] as const)('c1m cluster hands c1m %s every option they share and its own settings, and it parses them back to the same values', (name) => {
    const cluster = parse('cluster', optionsOf('cluster').flatMap(sampleArgv)).opts as OptionsOf<'cluster'>;
    const own: Record<string, unknown> = OWN[name];
    const { argv, env } = name === 'router' ? routerChild(cluster, OWN.router) : edgeChild(cluster, OWN.edge);
    const { opts, source } = parse(name, argv, env);
    const clusterTakes = new Set(optionsOf('cluster').map((e) => e.name));
    for (const entry of optionsOf(name)) {
      // Every option the child shares with the cluster, or that the cluster sets for it, is passed; no other.
      const shared = entry.name in own || clusterTakes.has(entry.name);
      expect(Boolean(entry.child), `${entry.flag}: passed by c1m cluster`).toBe(shared);
      if (!shared) continue;
      // The child's own value where the cluster sets one for it, else the cluster's option of the same name.
      const expected = entry.name in own ? own[entry.name] : (cluster as Record<string, unknown>)[entry.name];
      expect(opts[entry.name], entry.flag).toEqual(expected);
      expect(source(entry.name), entry.flag).toBe(entry.child === 'env' ? 'env' : 'cli');
    }
    const passed = optionsOf(name).filter((entry) => entry.child);
    // Secrets never go on the command line, which `ps` shows.
    for (const entry of passed.filter((e) => e.child === 'env')) expect(argv).not.toContain(flagOf(entry));
    expect(passed.length).toBeGreaterThan(10);
  });

  it.each([
    ['its store', undefined],
    ['a replicated store of its own', '/tmp/c1m-run-work'],
  ])('c1m run hands c1m cluster every option they share, with %s, and c1m cluster parses them back to the same values', (_, work) => {
    // --msg-rate and --msg-rates may not be given together.
    const run = parse('run', optionsOf('run').filter((e) => !e.conflicts).flatMap(sampleArgv)).opts as OptionsOf<'run'>;
    if (!work) delete run.replicas;
    const argv = clusterArgv({ ...run, db: run.db!, out: '/tmp/report', sampleMs: 1000 }, work);
    const { opts, source } = parse('cluster', argv);
    /** What the run sets for the cluster itself. */
    const own: Record<string, unknown> = { maxUserId: Math.max(run.users, run.connections), ...(work && { db: `${work}/view.db`, stateDir: `${work}/state` }) };
    const shared = optionsOf('run').filter((e) => optionsOf('cluster').some((c) => c.name === e.name) && (e.name in own || e.name in run));
    for (const { name } of [...shared, ...Object.keys(own).map((name) => ({ name }))]) {
      expect(opts[name], name).toEqual(name in own ? own[name] : (run as Record<string, unknown>)[name]);
      expect(source(name), name).toBe('cli');
    }
    expect(shared.length).toBeGreaterThan(8);
  });

  it('is what docs/options.md says (npm run docs:options writes it)', () => {
    expect(readFileSync(join(import.meta.dirname, '..', 'docs', 'options.md'), 'utf8')).toBe(optionsDoc());
  });
});
