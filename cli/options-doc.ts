/**
 * docs/options.md, from the option table (server/options.ts): `npm run docs:options` writes it, and
 * test/options.test.ts fails when the file is not what the table gives.
 */
import { fileURLToPath } from 'node:url';
import { COMMANDS, SHARING_COMMANDS, OPTIONS, type OptionEntry } from '../server/options.js';

/** Text for a table cell: a pipe would end the cell, and `<id>` would read as an HTML tag. */
const cell = (text: string): string => text.replace(/\|/g, '\\|').replace(/</g, '\\<');

const defaultOf = (entry: OptionEntry): string => {
  if (entry.defaultHelp !== undefined) return `\`${entry.defaultHelp}\``;
  return entry.default === undefined ? '' : `\`${String(entry.default)}\``;
};

const CHILD = { argv: 'command line', env: 'environment' } as const;

export function optionsDoc(): string {
  const rows = OPTIONS.map((entry: OptionEntry) =>
    [
      `\`${entry.flag}\``,
      entry.commands.join(', '),
      defaultOf(entry),
      entry.env ?? '',
      entry.child ? CHILD[entry.child] : '',
      cell(entry.help + (entry.choices ? ` (one of: ${entry.choices.join(', ')})` : '')),
    ].join(' | '),
  );
  return [
    '# Options',
    '',
    `Every option of c1m's commands, one row each. The options of ${COMMANDS.map((c) => `\`c1m ${c}\``).join(', ')} are all here; ${SHARING_COMMANDS.map((c) => `\`c1m ${c}\``).join(', ')} take some of these beside options of their own (\`c1m <command> --help\` lists them).`,
    'An option of `c1m cluster` that its edges or routers take too reaches them as the column "To edges and routers" says: on their command line, or in their environment (secrets, which `ps` would show).',
    '',
    'This file is written from the option table, server/options.ts, by `npm run docs:options`; test/options.test.ts fails when it is out of date.',
    '',
    '| Option | Commands | Default | Environment | To edges and routers | Help |',
    '|---|---|---|---|---|---|',
    ...rows.map((row) => `| ${row} |`),
    '',
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(optionsDoc());
