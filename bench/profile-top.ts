/**
 * The top entries of V8 CPU profiles by self time: `node dist/bench/profile-top.js FILE.cpuprofile… [--top 25]`.
 * Several files are summed (a cluster's edges). Idle and GC are listed like any function.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 25;
const self = new Map<string, number>();
let total = 0;
for (const file of args) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const names = new Map(profile.nodes.map((n) => [n.id, `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${n.callFrame.lineNumber + 1}`]));
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    self.set(names.get(id)!, (self.get(names.get(id)!) ?? 0) + us);
    total += us;
  });
}
const busy = total - [...self].filter(([name]) => name.startsWith('(idle)')).reduce((n, [, us]) => n + us, 0);
console.log(`${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s not idle; self time as % of not idle:`);
for (const [name, us] of [...self].filter(([name]) => !name.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${((100 * us) / busy).toFixed(1).padStart(5)}%  ${name}`);
