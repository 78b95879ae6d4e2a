import { InvalidArgumentError, Option } from 'commander';

/** A commander argument parser for a safe integer >= min. */
export const integer =
  (name: string, min: number) =>
  (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}`);
    return value;
  };

/** --db, shared by every command that opens the store. */
export const dbOption = () => new Option('--db <path>', 'SQLite subscription store').env('C1M_DB').default('./data/c1m.db');
