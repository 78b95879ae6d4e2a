/**
 * The docs check: every relative link of the README, CONTRIBUTING.md and docs/ resolves, to a heading where it
 * names one; the README stays short; every benchmark file is dated and names its command and machine; and every
 * command a newcomer would copy (each line of a fenced `sh` block) is run here, or by a test named in TESTED_BY,
 * or is a long run, marked so in the docs and named in LONG_RUNS with what implements it.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../bench/until.js';
import { runCli, spawnServer, stopChild, tempDir } from './helpers.js';

const root = join(import.meta.dirname, '..');
const read = (file: string) => readFileSync(join(root, file), 'utf8');

/** The README, the contributor's page, a SECURITY.md if there is one, and every page under docs/. */
function docFiles(): string[] {
  const pages = (dir: string): string[] =>
    readdirSync(join(root, dir), { withFileTypes: true })
      .sort((a, b) => a.name.localeCompare(b.name))
      .flatMap((e) => (e.isDirectory() ? pages(join(dir, e.name)) : e.name.endsWith('.md') ? [join(dir, e.name)] : []));
  return ['README.md', 'CONTRIBUTING.md', 'SECURITY.md'].filter((f) => existsSync(join(root, f))).concat(pages('docs'));
}

/** A page's lines outside fenced code blocks, and each fenced block with its info string. */
function parse(markdown: string) {
  const prose: string[] = [];
  const blocks: { info: string; lines: string[] }[] = [];
  let block: { info: string; lines: string[] } | undefined;
  for (const line of markdown.split('\n')) {
    const fence = /^\s*```(.*)$/.exec(line);
    if (fence && !block) blocks.push((block = { info: fence[1].trim(), lines: [] }));
    else if (fence) block = undefined;
    else if (block) block.lines.push(line);
    else prose.push(line);
  }
  return { prose, blocks };
}

/** The anchors GitHub gives a page's headings: lower case, punctuation but - and _ dropped, each space a hyphen; repeats numbered. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of parse(markdown).prose) {
    const heading = /^#{1,6}\s+(.*?)\s*$/.exec(line)?.[1];
    if (heading === undefined) continue;
    const text = heading.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
    const base = text.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** The targets of a page's inline links, code spans left out. */
const linkTargets = (markdown: string) =>
  parse(markdown).prose.flatMap((line) => [...line.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]));

/** What is wrong with a link from `file`, or undefined when it resolves. Links to the web are not followed. */
function brokenLink(file: string, target: string): string | undefined {
  if (/^[a-z][a-z+.-]*:/i.test(target)) return undefined;
  const [path, anchor] = target.split('#');
  const resolved = path === '' ? file : join(dirname(file), decodeURIComponent(path));
  if (!existsSync(join(root, resolved))) return `${file}: ${target}: no file ${resolved}`;
  if (anchor === undefined) return undefined;
  if (!resolved.endsWith('.md')) return `${file}: ${target}: an anchor into a file that is not markdown`;
  return anchors(read(resolved)).has(anchor) ? undefined : `${file}: ${target}: no heading #${anchor} in ${resolved}`;
}

/** A command of a fenced shell block: its text without the trailing comment, and the line as written. */
interface Command {
  file: string;
  command: string;
  line: string;
}

/** Every line of every fenced `sh` block, lines ending in `\` joined to the next. */
function commands(file: string): Command[] {
  return parse(read(file))
    .blocks.filter((b) => /^(sh|bash|shell)$/.test(b.info))
    .flatMap((b) => b.lines.join('\n').replace(/\\\n\s*/g, '').split('\n'))
    .map((line) => ({ file, line, command: line.replace(/\s+#\s.*$/, '').trim() }))
    .filter((c) => c.command !== '');
}

/** Commands the docs show that a test or script runs: each [file, text] must hold, the text showing where it runs it. */
const TESTED_BY: Record<string, [file: string, shows: string][]> = {
  'npm install && npm start': [
    ['package.json', 'node dist/cli/c1m.js server --demo'],
    ['test/demo.test.ts', "'--demo'"],
  ],
  'bash .ci/run': [['.ci/run', 'npm test']],
  'npm test': [
    ['.ci/run', 'npm test'],
    ['package.json', '"test": "npm run build --silent && vitest run"'],
  ],
  'npx c1m cluster --edges 4 --db ./data/c1m.db': [['test/cluster.test.ts', "spawnCluster(['--edges', '3', '--db'"]],
  'npx c1m cluster --connections 60000': [['test/capacity.test.ts', 'edgesFor(connections, capacity)']],
  'npx wscat -c ws://localhost:8000/ws/1': [['test/transports.test.ts', "describe('/ws/<id>'"]],
  // The layout across hosts: the fault run starts it, and test/haproxy.test.ts runs the fault run.
  'c1m cluster --no-router --nats tls://10.201.0.10:4222 --nats-creds /etc/c1m/bus --nats-ca /etc/c1m/bus/ca.pem --edges 2 --port-per-edge --host 10.201.0.11 --port 8100 --agent-port 9100 --edge-id-prefix edge1- --max-connections 300 --drain-rate 100':
    [
      ['bench/faults.ts', "c1mArgv(['cluster', '--no-router'"],
      ['test/haproxy.test.ts', 'await runFaults('],
    ],
  'nats-server -c /etc/c1m/nats/nats.conf': [
    ['bench/faults.ts', "['nats-server', '-c'"],
    ['test/haproxy.test.ts', 'await runFaults('],
  ],
  'c1m router --nats tls://10.201.0.10:4222 --nats-creds /etc/c1m/nats/router.creds --nats-ca /etc/c1m/nats/ca.pem --api-host 10.201.0.10 --token "$(cat /etc/c1m/token)"':
    [
      ['bench/faults.ts', "c1mArgv(['router'"],
      ['test/haproxy.test.ts', 'await runFaults('],
    ],
};

/** Long runs (a million streams, root): marked `# long run` where the docs show them, and what implements each. */
const LONG_RUNS: Record<string, string> = {
  'sudo scripts/c1m-run.sh --sysctl --msg-rates 300,600,1000,2000': 'scripts/c1m-run.sh',
  'npm run bench:floor -- --connections 1000000 --rates 20000,40000,50000 --seconds 15': 'bench/floor.ts',
  'npm run bench:hub -- --streams 15000 --sends 20 --rounds 3 [--transport sse|ws]': 'bench/hub.ts',
};

/** `c1m` commands cheap and safe enough to run here (no listener, no root): help, tokens, configuration files. */
const RUN_HERE = ['--help', 'token', 'nats-config', 'haproxy-config'];

/** A command line's words, as a shell would split it (quotes, no expansion). */
const words = (command: string) => [...command.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]);
const isCurl = (c: Command) => words(c.command)[0] === 'curl';
const c1mArgs = (c: Command) => {
  const w = words(c.command);
  const at = w[0] === 'npx' ? 1 : 0;
  return w[at] === 'c1m' ? w.slice(at + 1) : undefined;
};
const runsHere = (c: Command) => isCurl(c) || RUN_HERE.some((word) => c1mArgs(c)?.[0] === word || c1mArgs(c)?.includes('--help'));

const all = docFiles().flatMap(commands);

it('GitHub anchors, as the links expect them', () => {
  expect([...anchors('# Other origins: `--allow-origin`\n## The replicated brain\'s faults: `--replicas 3` (issue 28)\n## A\n## A')]).toEqual([
    'other-origins---allow-origin',
    'the-replicated-brains-faults---replicas-3-issue-28',
    'a',
    'a-1',
  ]);
});

it('every relative link of the docs resolves, to a heading where it names one', () => {
  const broken = docFiles().flatMap((file) => linkTargets(read(file)).map((target) => brokenLink(file, target)));
  expect(broken.filter((b) => b !== undefined)).toEqual([]);
  expect(docFiles().length).toBeGreaterThan(10);
});

it('README.md is at most 200 lines', () => {
  expect(read('README.md').trimEnd().split('\n').length).toBeLessThanOrEqual(200);
});

it('every benchmark file is dated, names its command and machine, and is listed in the index; every chart is shown by one', () => {
  const index = read('docs/benchmarks/README.md');
  const all = readdirSync(join(root, 'docs/benchmarks')).filter((f) => f !== 'README.md');
  // A chart (SVG) sits beside the file that shows it, under the same date.
  const charts = all.filter((f) => f.endsWith('.svg'));
  const files = all.filter((f) => !charts.includes(f));
  const unshown = charts.filter((chart) => !files.some((f) => read(join('docs/benchmarks', f)).includes(`](${chart})`)));
  expect(unshown).toEqual([]);
  const wrong = files.flatMap((f) => {
    const text = read(join('docs/benchmarks', f));
    return [
      /^\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md$/.test(f) ? [] : [`${f}: not named YYYY-MM-DD-<subject>.md`],
      text.includes('**Command**') ? [] : [`${f}: no **Command**`],
      text.includes('**Machine**') ? [] : [`${f}: no **Machine**`],
      index.includes(`](${f})`) ? [] : [`${f}: not listed in docs/benchmarks/README.md`],
    ].flat();
  });
  expect(wrong).toEqual([]);
  expect(files.length).toBeGreaterThan(10);
});

describe('every command a newcomer would copy', () => {
  it('is run here, by a named test, or is a marked long run with what implements it', () => {
    const unchecked = all.filter((c) => !runsHere(c) && !(c.command in TESTED_BY) && !(c.command in LONG_RUNS));
    expect(unchecked.map((c) => `${c.file}: ${c.command}`), 'add the command to TESTED_BY with the test that runs it').toEqual([]);
    const shown = new Set(all.map((c) => c.command));
    expect(Object.keys({ ...TESTED_BY, ...LONG_RUNS }).filter((c) => !shown.has(c)), 'map entries no page shows').toEqual([]);
  });

  it('those a test runs: the test runs them', () => {
    const missing = Object.entries(TESTED_BY).flatMap(([command, evidence]) =>
      evidence.filter(([file, shows]) => !existsSync(join(root, file)) || !read(file).includes(shows)).map(([file, shows]) => `${command}: ${file} lacks ${shows}`),
    );
    expect(missing).toEqual([]);
  });

  it('long runs: marked so in the docs, implemented where LONG_RUNS says, and npm scripts that exist', () => {
    const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>;
    const wrong = all.flatMap((c) => {
      const script = /^npm run ([\w:-]+)/.exec(c.command)?.[1];
      return [
        script !== undefined && !(script in scripts) ? [`${c.file}: no npm script ${script}`] : [],
        c.command in LONG_RUNS && !/#\s*long run\b/.test(c.line) ? [`${c.file}: ${c.command}: not marked # long run`] : [],
        c.command in LONG_RUNS && !existsSync(join(root, LONG_RUNS[c.command])) ? [`${c.command}: no ${LONG_RUNS[c.command]}`] : [],
      ].flat();
    });
    expect(wrong).toEqual([]);
  });

  it('the c1m commands run here succeed: help, tokens, configuration files', async () => {
    const dir = tempDir();
    const env = { C1M_STREAM_SECRET: 'a stream secret of at least 32 bytes' };
    const here = all.filter((c) => !isCurl(c) && runsHere(c));
    expect(here.length).toBeGreaterThan(2);
    for (const c of here) {
      // Paths of an operator's host go to a directory of the test's own.
      const args = c1mArgs(c)!.map((w) => w.replace(/^\/etc\/c1m/, dir));
      const { code, stdout, stderr } = await runCli(args, { env });
      expect(code, `${c.file}: ${c.command}: ${stderr}`).toBe(0);
      expect(stdout.length, c.command).toBeGreaterThan(0);
    }
  });

  describe('the curl steps, in order, on a --demo server', () => {
    let server: Awaited<ReturnType<typeof spawnServer>>;
    const streams = new Map<string, { text: string; stop: AbortController }>();
    beforeAll(async () => {
      server = await spawnServer(['--db', join(tempDir(), 'c1m.db'), '--demo']);
    });
    afterAll(async () => {
      for (const s of streams.values()) s.stop.abort();
      if (server) await stopChild(server.child);
    });

    /** Runs one documented curl command against the demo server: the docs' ports 8000 and 8001 are the server's. */
    async function curl(c: Command) {
      const [, ...args] = words(c.command);
      let method: string | undefined;
      let body: string | undefined;
      let stream = false;
      let url: string | undefined;
      for (let i = 0; i < args.length; i++) {
        if (args[i] === '-N') stream = true;
        else if (args[i] === '-X') method = args[++i];
        else if (args[i] === '-d') body = args[++i];
        else if (!args[i].startsWith('-') && url === undefined) url = args[i];
        else throw new Error(`${c.file}: ${c.command}: the docs check runs curl with -N, -X and -d only; map this command to a test instead`);
      }
      const port = (p: string) => String(p === '8000' ? server.port : p === '8001' ? server.apiPort : p);
      const target = `http://${url!.replace(/^(?:https?:\/\/)?localhost:(\d+)/, (_, p: string) => `127.0.0.1:${port(p)}`)}`;
      // curl -d sends a form's content type; the API reads such a body as JSON.
      const init = { method: method ?? (body === undefined ? 'GET' : 'POST'), body, headers: body === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded' } };
      if (!stream) return fetch(target, init);
      const stop = new AbortController();
      const res = await fetch(target, { ...init, signal: stop.signal });
      const reader = { text: '', stop };
      streams.set(new URL(target).pathname, reader);
      void (async () => {
        for await (const chunk of res.body!) reader.text += Buffer.from(chunk).toString();
      })().catch(() => {});
      return res;
    }

    it('each answers 2xx, as its comment says where it shows the answer, and the streams get what the README promises', async () => {
      const steps = all.filter(isCurl);
      expect(steps.length).toBeGreaterThan(5);
      for (const c of steps) {
        const res = await curl(c);
        expect(res.status, `${c.file}: ${c.command}`).toBeLessThan(300);
        // A comment that starts with a JSON value is the answer the docs show.
        const shown = /\s#\s+([[{].*?[\]}])(?:\s|$)/.exec(c.line)?.[1];
        if (shown !== undefined) expect(await res.json(), `${c.file}: ${c.command}`).toEqual(JSON.parse(shown));
      }
      const lines = (path: string) => streams.get(path)?.text.split('\n') ?? [];
      const unwelcomed = () => [...streams.keys()].filter((path) => !lines(path).some((l) => l.includes('Welcome')));
      await until("the walk-through's messages on user 1's stream, and every stream's welcome", () => ['hi', 'nice shot'].every((m) => lines('/test/1').includes(m)) && unwelcomed().length === 0, 5000).catch(() => undefined);
      expect(['hi', 'nice shot'].filter((m) => lines('/test/1').includes(m))).toEqual(['hi', 'nice shot']);
      expect(unwelcomed()).toEqual([]);
    });
  });
});
