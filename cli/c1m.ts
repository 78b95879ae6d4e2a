#!/usr/bin/env node
import { createRequire } from 'node:module';
import { c1mProgram } from './program.js';

const { version } = createRequire(import.meta.url)('../../package.json') as { version: string };
c1mProgram(version)
  .parseAsync()
  .catch((err: Error) => {
    console.error(`c1m: ${err.message}`);
    process.exit(1);
  });
