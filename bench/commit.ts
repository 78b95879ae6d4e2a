/**
 * What a message costs the history (subsmanager/history.ts) when each one is
 * committed alone, as an acknowledged send is, against commits of many: the
 * process's CPU per message (the committing thread and the checkpointer's),
 * on a fresh store in a temporary directory.
 *
 *   node dist/bench/commit.js [--messages 20000] [--batch 50] [--rounds 3]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openStore } from '../subsmanager/store.js';

const { values } = parseArgs({ options: { messages: { type: 'string', default: '20000' }, batch: { type: 'string', default: '50' }, rounds: { type: 'string', default: '3' } } });
const [messages, batch, rounds] = [Number(values.messages), Number(values.batch), Number(values.rounds)];

const dir = mkdtempSync(join(tmpdir(), 'c1m-commit-'));
const store = openStore(join(dir, 'c1m.db'));
const history = store.history({ seconds: 3600, perSubject: 1000 });
if (!history.claimLease()) throw new Error('the new store has a holder already');
const body = Buffer.alloc(40, 'x');
/** CPU µs per message of `messages` appends, committed every `every`. */
function perMessage(every: number): number {
  const start = process.cpuUsage();
  for (let i = 0; i < messages; i++) {
    history.append(1 + (i % 5000), body);
    if (i % every === every - 1) history.flush();
  }
  history.flush();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / messages;
}
try {
  for (let round = 1; round <= rounds; round++) {
    console.log(JSON.stringify({ round, messages, cpuMicrosPerMessage: { alone: +perMessage(1).toFixed(1), [`in${batch}`]: +perMessage(batch).toFixed(1) } }));
  }
} finally {
  history.close();
  store.close();
  rmSync(dir, { recursive: true, force: true });
}
