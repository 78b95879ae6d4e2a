import { Option, type Command } from 'commander';
import { optionsOf, type CommandName, type OptionEntry } from '../server/options.js';

/** A table entry (server/options.ts) as a commander option. */
class TableOption extends Option {
  constructor(readonly entry: OptionEntry) {
    super(entry.flag, entry.help);
    if ('default' in entry) this.default(entry.default, entry.defaultHelp);
    if (entry.env) this.env(entry.env);
    if (entry.choices) this.choices(entry.choices);
    if (entry.parse) this.argParser(entry.parse);
    if (entry.conflicts) this.conflicts(entry.conflicts);
  }

  /** The value goes under the entry's name (--heartbeat under heartbeatSeconds): a command's options are the resolved options as they are. */
  override attributeName(): string {
    return this.entry.name;
  }
}

/** Adds to `command` every option the table gives the command `name`, in table order. */
export function addOptions(command: Command, name: CommandName): Command {
  for (const entry of optionsOf(name)) command.addOption(new TableOption(entry));
  return command;
}

/** The option `field` as the command `name` takes it: for a command with options of its own, each in its place. */
export function tableOption(name: CommandName, field: string): Option {
  const entry = optionsOf(name).find((e) => e.name === field);
  if (!entry) throw new Error(`the option table gives ${name} no ${field}`);
  return new TableOption(entry);
}
