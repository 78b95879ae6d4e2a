/**
 * No function outside the tests is over 80 lines (issue 30): a longer one does several jobs, to be split along them.
 * Counted with the TypeScript compiler over every .ts file git tracks outside test/, each function, method, function
 * expression and arrow function from its first line to its last. Templates, functions that are one template literal,
 * are allowed by name below; an allowed one that is gone or no longer long fails too, so that the list cannot rot.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');
const MAX_LINES = 80;

/**
 * `file name` → why it may be longer. (The browser client's `connect`, server/browser-client.ts, is no TypeScript
 * function: it is text in the template BROWSER_CLIENT, which /c1m.js serves, and the compiler reads it as a string.)
 */
const ALLOWED: Record<string, string> = {
  'cluster/haproxy.ts haproxyConfig': "one template literal, HAProxy's configuration file with a comment on each setting: read as the file it writes",
};

interface Measured {
  /** `file name`, the key of ALLOWED. */
  key: string;
  /** `file:line: name, N lines`. */
  where: string;
  lines: number;
}

/** A function's name: its own, else what it is assigned to, else `(anonymous)` after the function around it. */
function nameOf(node: ts.FunctionLikeDeclaration, outer: string): string {
  const named = node.name ?? (ts.isVariableDeclaration(node.parent) || ts.isPropertyAssignment(node.parent) || ts.isPropertyDeclaration(node.parent) ? node.parent.name : undefined);
  if (ts.isConstructorDeclaration(node)) return `${outer} constructor`;
  if (named && (ts.isIdentifier(named) || ts.isStringLiteral(named) || ts.isPrivateIdentifier(named))) return named.text;
  return outer ? `${outer} › (anonymous)` : '(anonymous)';
}

/** Every function of one source file, with its length in lines. */
function functionsOf(file: string, text: string): Measured[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const lineOf = (pos: number) => source.getLineAndCharacterOfPosition(pos).line + 1;
  const found: Measured[] = [];
  const visit = (node: ts.Node, outer: string): void => {
    let name = outer;
    if (ts.isClassDeclaration(node) && node.name) name = node.name.text;
    if ((ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node) || ts.isFunctionExpression(node) || ts.isArrowFunction(node) || ts.isConstructorDeclaration(node) || ts.isAccessor(node)) && node.body) {
      name = nameOf(node, outer);
      const first = lineOf(node.getStart(source));
      const lines = lineOf(node.getEnd()) - first + 1;
      found.push({ key: `${file} ${name}`, where: `${file}:${first}: ${name}, ${lines} lines`, lines });
    }
    ts.forEachChild(node, (child) => visit(child, name));
  };
  visit(source, '');
  return found;
}

const sources = execFileSync('git', ['ls-files', '*.ts'], { cwd: root, encoding: 'utf8' })
  .split('\n')
  .filter((file) => file && !file.startsWith('test/'));

it('measures a function from its first line to its last, whatever its form', () => {
  const text = ['export function a() {', '  return 1;', '}', 'const b = async (x: number) => {', '  const c = function () {};', '  return x;', '};', 'class D {', '  e() {}', '}'].join('\n');
  expect(functionsOf('x.ts', text).map((f) => f.where)).toEqual(['x.ts:1: a, 3 lines', 'x.ts:4: b, 4 lines', 'x.ts:5: c, 1 lines', 'x.ts:9: e, 1 lines']);
});

const long = sources.flatMap((file) => functionsOf(file, readFileSync(join(root, file), 'utf8'))).filter((f) => f.lines > MAX_LINES);

it(`no function outside the tests is over ${MAX_LINES} lines, but the templates allowed by name`, () => {
  expect(sources.length).toBeGreaterThan(50);
  expect(long.filter((f) => !(f.key in ALLOWED)).map((f) => f.where)).toEqual([]);
});

it(`allows only templates that are still over ${MAX_LINES} lines, so that the list cannot rot`, () => {
  expect(Object.keys(ALLOWED).filter((key) => !long.some((f) => f.key === key))).toEqual([]);
});
