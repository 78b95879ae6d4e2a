/**
 * The folders are the design: imports only point down the layers
 * docs/architecture.md draws, and no two files import each other, directly or around a loop.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');
/** Each folder and the folders below it that it may import; index.ts is the package's entry, for embedders, and client.ts the backend's client beside it. */
const MAY_IMPORT: Record<string, string[]> = {
  cli: ['loadgen', 'cluster', 'server', 'router', 'subsmanager'],
  bench: ['cli', 'loadgen', 'cluster', 'server', 'router', 'subsmanager'],
  '.': ['server', 'router', 'subsmanager'],
  loadgen: ['cluster', 'server', 'router', 'subsmanager'],
  cluster: ['server', 'router', 'subsmanager'],
  server: ['router', 'subsmanager'],
  router: ['subsmanager'],
  subsmanager: [],
};

const sources = Object.keys(MAY_IMPORT).flatMap((folder) =>
  readdirSync(join(root, folder))
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && (folder !== '.' || f === 'index.ts' || f === 'client.ts'))
    .map((f) => normalize(join(folder, f))),
);

/** The relative paths a source imports: `from`, `import '…'` and `import(…)`, in any of the three quotes. */
const importedPaths = (text: string) => [...text.matchAll(/(?:\bfrom|\bimport)\s*\(?\s*(['"`])(\.[^'"`]+)\1/g)].map((m) => m[2]);

/** file → the project files it imports (static and dynamic), as paths from the root. */
const imports = new Map(
  sources.map((file) => {
    const specs = importedPaths(readFileSync(join(root, file), 'utf8'));
    return [file, specs.map((s) => normalize(join(dirname(file), s.replace(/\.js$/, '.ts'))))];
  }),
);
const folderOf = (file: string) => (dirname(file) === '.' ? '.' : dirname(file).split('/')[0]);

it('finds every form of import, whatever its quotes', () => {
  const text = [`import { a } from '../cli/a.js';`, `export { b } from "../cli/b.js";`, 'import "../cli/c.js";', 'const d = await import(`../cli/d.js`);', `const e = await import( './e.js' );`].join('\n');
  expect(importedPaths(text)).toEqual(['../cli/a.js', '../cli/b.js', '../cli/c.js', '../cli/d.js', './e.js']);
});

it('imports only point down: bench → cli → loadgen → cluster → server → router → subsmanager', () => {
  const upward: string[] = [];
  for (const [file, targets] of imports) {
    for (const target of targets) {
      const [from, to] = [folderOf(file), folderOf(target)];
      if (from !== to && !MAY_IMPORT[from].includes(to)) upward.push(`${file} imports ${relative(root, join(root, target))}`);
    }
  }
  expect(upward).toEqual([]);
  expect(sources.length).toBeGreaterThan(40);
});

it('no file imports itself around a loop', () => {
  const cycles: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return;
    if (state.get(file) === 'visiting') return void cycles.push([...path.slice(path.indexOf(file)), file].join(' → '));
    state.set(file, 'visiting');
    for (const target of imports.get(file) ?? []) visit(target, [...path, file]);
    state.set(file, 'done');
  };
  for (const file of sources) visit(file, []);
  expect(cycles).toEqual([]);
});

/** What a run, a build or a profile leaves in the working tree, which the repository must never carry (.gitignore names them). */
const GENERATED = [/^(dist|node_modules|data|reports|bench-results)\//, /\.(db|db-wal|db-shm|edges|log|cpuprofile|heapprofile)$/, /(^|\/)isolate-0x[0-9a-f]+-\d+-v8\.log$/];

it('tracks no build output, databases, data sets, reports, logs or profiles', () => {
  const tracked = execFileSync('git', ['ls-files'], { cwd: root, encoding: 'utf8' }).split('\n').filter(Boolean);
  expect(tracked.length).toBeGreaterThan(100);
  expect(tracked.filter((file) => GENERATED.some((pattern) => pattern.test(file)))).toEqual([]);
});
