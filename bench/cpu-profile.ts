/**
 * A V8 CPU profile of any c1m process, written when it exits: Node refuses
 * --cpu-prof in NODE_OPTIONS, which is the only way into processes that c1m
 * itself starts (a cluster's edges and router). Preloaded with --import:
 *
 *   C1M_NODE_OPTIONS='--import ./dist/bench/cpu-profile.js' CPU_PROFILE_DIR=/tmp/prof npm run bench:hub -- --rounds 1
 *
 * writes /tmp/prof/<pid>.cpuprofile per process (open in Chrome DevTools, or summarize with bench/profile-top.ts).
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const dir = process.env.CPU_PROFILE_DIR ?? '.';
const session = new Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.setSamplingInterval', { interval: 100 });
session.post('Profiler.start');
// The same-thread session answers synchronously, so the profile is written inside the 'exit' event.
process.once('exit', () =>
  session.post('Profiler.stop', (err, result) => {
    if (!err) writeFileSync(join(dir, `${process.pid}.cpuprofile`), JSON.stringify(result.profile));
  }),
);
