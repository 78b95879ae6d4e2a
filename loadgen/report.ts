/**
 * The report folder of `c1m run`: report.md with every figure, samples.json
 * (one sample a second), summary.json (the figures as data), the cluster's
 * log, and SVG charts over time in the spirit of the original's Ganglia
 * graphs: connections, memory, CPU, throughput and delivery latency.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { DEFAULTS } from '../server/defaults.js';
import { LOADGEN_ROLES, P99_TARGET_MS, SERVER_ROLES, type FullSample, type KernelMemory, type Role, type RunResult, type Sample } from './run-result.js';

export const CHARTS = ['connections', 'memory', 'cpu', 'throughput', 'latency'] as const;

const ROLE_NAMES: Record<Role, string> = {
  edges: 'edges',
  router: 'router',
  nats: 'nats-server',
  supervisor: 'cluster supervisor',
  floodWorkers: 'flood workers',
  runner: 'run process (flood parent, msggen, sampler)',
};

const count = (n: number) => Math.round(n).toLocaleString('en-US');
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const perStream = (bytes: number, streams: number) => (streams > 0 ? `${count(bytes / streams)} B` : 'n/a');
const sum = (record: Record<Role, number>, roles: readonly Role[]) => roles.reduce((n, r) => n + record[r], 0);
const ms = (l: { p50: number; p99: number; p999: number; max: number }) => `${l.p50} / ${l.p99} / ${l.p999} / ${l.max} ms`;
const errorsText = (errors: Record<string, number>) =>
  Object.entries(errors)
    .map(([kind, n]) => `${kind} ${count(n)}`)
    .join(', ') || 'none';

/** CPU seconds of each role (and the machine) over the samples of one phase. */
/** CPU seconds of each role and of the machine over the samples that `within` takes (each covers the time since the one before it), and the heartbeats received meanwhile. */
function cpuSeconds(samples: Sample[], within: (s: Sample) => boolean) {
  const roles = Object.fromEntries([...SERVER_ROLES, ...LOADGEN_ROLES].map((r) => [r, 0])) as Record<Role, number>;
  let machine = 0;
  let seconds = 0;
  let heartbeats = 0;
  samples.forEach((s, i) => {
    if (i === 0 || !within(s)) return;
    const dt = s.t - samples[i - 1].t;
    seconds += dt;
    for (const r of Object.keys(roles) as Role[]) roles[r] += s.cpu[r] * dt;
    machine += s.machineCpu.busy * dt;
    heartbeats += s.heartbeats - samples[i - 1].heartbeats;
  });
  return { roles, machine, seconds, heartbeats };
}

function memoryTable(peak: FullSample): string[] {
  const streams = peak.open;
  const row = (name: string, processes: number, rss: number, pss: number) => `| ${name} | ${processes} | ${mib(rss)} | ${perStream(rss, streams)} | ${mib(pss)} | ${perStream(pss, streams)} |`;
  const group = (roles: readonly Role[], total: string) => [
    ...roles.map((r) => row(ROLE_NAMES[r], peak.processes[r], peak.rss[r], peak.pss[r])),
    row(`**${total}**`, sum(peak.processes, roles), sum(peak.rss, roles), sum(peak.pss, roles)),
  ];
  return [
    `| process | count | RSS | RSS per stream | PSS | PSS per stream |`,
    `| --- | ---: | ---: | ---: | ---: | ---: |`,
    ...group(SERVER_ROLES, 'c1m cluster (all server processes)'),
    ...group(LOADGEN_ROLES, 'load generator'),
  ];
}

function kernelTable(before: Sample, peak: Sample, messages: Sample | undefined): string[] {
  const streams = peak.open;
  const keys: [keyof KernelMemory, string][] = [
    ['usedBytes', 'used memory (MemTotal - MemAvailable)'],
    ['slabBytes', 'Slab'],
    ['sunreclaimBytes', 'SUnreclaim'],
    ['tcpMemBytes', 'TCP mem (/proc/net/sockstat, pages x 4 KiB)'],
  ];
  return [
    `| | before | at peak | growth | growth per connection | during messages (max) |`,
    `| --- | ---: | ---: | ---: | ---: | ---: |`,
    ...keys.map(([key, name]) => {
      const growth = peak.kernel[key] - before.kernel[key];
      return `| ${name} | ${mib(before.kernel[key])} | ${mib(peak.kernel[key])} | ${mib(growth)} | ${perStream(growth, streams)} | ${messages ? mib(messages.kernel[key]) : 'n/a'} |`;
    }),
    `| TCP sockets in use | ${count(before.kernel.tcpInUse)} | ${count(peak.kernel.tcpInUse)} | ${count(peak.kernel.tcpInUse - before.kernel.tcpInUse)} | | ${messages ? count(messages.kernel.tcpInUse) : 'n/a'} |`,
  ];
}

/** The run's report as Markdown: each section from its part of the result. */
function reportMarkdown(r: RunResult): string {
  return [...introSection(r), ...connectionsSection(r), ...memorySection(r), ...cpuSection(r), ...messagesSection(r), ...filesSection()].join('\n');
}

/** What was asked of the run, the cluster that took it and its history. */
function introSection(r: RunResult): string[] {
  const o = r.options;
  const lines: string[] = [`# C1M run, ${r.startedAt}`, ''];
  lines.push(`Status: **${r.status}**${r.error ? ` (${r.error})` : ''}; ${r.seconds.toFixed(0)} s in all.`, '');
  lines.push(
    `Target ${count(o.connections)} ${o.transport ?? 'chunked'} streams from ${o.src} (local ports ${o.ports[0]}-${o.ports[1]}) at ${count(o.rate)} connects/s, ` +
      (o.topics ? `each also listening to one of ${count(o.topics)} topics (${((o.topicShare ?? 0) * 100).toFixed(0)} % of the sends to a random one of them), ` : '') +
      `held ${o.hold} s; friends graph ${count(o.users)} users x m=${o.m} in ${o.replicas ? `the store's stream on JetStream (R${o.replicas})` : o.db}` +
      (r.graph ? ` (${count(r.graph.rows)} subscriptions, ${r.graph.loaded ? `generated and loaded in ${r.graph.seconds} s` : 'already there'})` : '') +
      `; messages for ${o.msgSeconds} s ${o.msgRates ? `at each of ${o.msgRates.join(', ')} sends/s` : o.msgRate ? `at ${o.msgRate} sends/s` : `from ${o.generators} generators every ${o.sendInterval[0]}-${o.sendInterval[1]} ms`}` +
      (o.warmup > 0 ? `, after a ${o.warmup} s warm-up at the first rate (not measured: V8 compiles the delivery path in every edge)` : '') +
      '.',
    '',
  );
  const routers = `${o.routers ?? 1} router${(o.routers ?? 1) > 1 ? 's' : ''}${(o.partitions ?? 1) > 1 ? ` sharing ${o.partitions} partitions` : ''}`;
  const servers = o.replicas ? `${o.replicas} clustered nats-servers with JetStream (the brain at R${o.replicas})` : 'nats-server';
  if (r.cluster) lines.push(`Cluster: ${r.cluster.edges} edges (capacity ${count(r.cluster.capacity)} streams), ${routers}, ${servers}; ready in ${r.cluster.startSeconds.toFixed(1)} s; ${r.cluster.restarts} child restarts.`, '');
  lines.push(
    o.historySeconds > 0
      ? `History: every message kept ${o.historySeconds} s (at most ${count(o.historyPerSubject)} per sender)` +
          (r.history ? `; after the run ${count(r.history.messages)} messages in ${(r.history.bytes / 2 ** 20).toFixed(1)} MiB (${count(r.history.messages ? Math.round(r.history.bytes / r.history.messages) : 0)} B per message, file and write-ahead log).` : '.')
      : 'History: none (--history-seconds 0: no message ids).',
    '',
  );

  return lines;
}

function connectionsSection(r: RunResult): string[] {
  const f = r.flood;
  if (!f) return [];
  const lines: string[] = [];
  const serverAtPeak = r.snapshots.peak?.serverStreams;
  lines.push('## Connections', '', '| figure | value |', '| --- | ---: |');
  lines.push(
    `| target | ${count(f.target)} |`,
    `| streams reached (most open at once, client side) | ${count(f.peakOpen)} |`,
    `| streams in the router's directory at the end of the hold | ${serverAtPeak === null || serverAtPeak === undefined ? 'n/a' : count(serverAtPeak)} |`,
    `| welcomed | ${count(f.welcomed)} |`,
    `| failed to connect or be welcomed | ${count(f.failed)} |`,
    `| closed by the server (unexpected) | ${count(f.closed)} |`,
    `| slow-consumer closes (server) | ${count(r.slowConsumerCloses ?? 0)} |`,
    `| held when the run stopped them | ${count(f.held)} |`,
    `| ramp | ${f.rampSeconds} s, ${count(f.connectsPerSecond)} connects/s |`,
    `| welcome latency p50 / p99 / p99.9 / max | ${ms(f.welcomeLatencyMs)} |`,
    `| flood workers' CPU per connect | ${count(f.workerCpuMicrosPerConnect)} µs |`,
    `| flood errors | ${errorsText(f.errors)} |`,
    '',
  );
  return lines;
}

function memorySection(r: RunResult): string[] {
  const { before, peak, messages } = r.snapshots;
  if (!before || !peak) return [];
  const lines: string[] = [];
  const server = { rss: sum(peak.rss, SERVER_ROLES), pss: sum(peak.pss, SERVER_ROLES) };
  const client = sum(peak.rss, LOADGEN_ROLES);
  const used = peak.kernel.usedBytes - before.kernel.usedBytes;
  lines.push(`## Memory with ${count(peak.open)} streams open (end of the hold, before any message)`, '');
  lines.push(
    `- c1m cluster: **${perStream(server.rss, peak.open)} RSS per stream** (${mib(server.rss)} in all, baselines included; target 2 KB), ` +
      `${perStream(server.pss, peak.open)} PSS per stream (${mib(server.pss)}: shared pages such as Node's code counted once).`,
    `- load generator: ${perStream(client, peak.open)} RSS per connection (${mib(client)}).`,
    `- the whole machine: used memory grew ${mib(used)}, ${perStream(used, peak.open)} per connection, both ends and the kernel included ` +
      `(the original: 40 KB with mochiweb, about 10 KB with libevent). Machine-wide figures hold only when nothing else runs on the box.`,
    '',
    ...memoryTable(peak),
    '',
    'Kernel:',
    '',
    ...kernelTable(before, peak, messages),
    '',
  );
  return lines;
}

function cpuSection(r: RunResult): string[] {
  const o = r.options;
  const f = r.flood;
  const samples = r.samples;
  if (samples.length <= 1) return [];
  const lines: string[] = [];
  lines.push('## CPU', '', 'CPU seconds per phase (cores on average in brackets); the machine has 2 cores, and loopback TCP work (softirq) lands on whichever process is running.', '');
  const phases = (['ramp', 'hold', 'warm-up', 'messages'] as const).map((p) => ({ p, ...cpuSeconds(samples, (s) => s.phase === p) })).filter((x) => x.seconds > 0);
  const cell = (seconds: number, span: number) => `${seconds.toFixed(1)} s (${(seconds / span).toFixed(2)})`;
  lines.push(`| process | ${phases.map((x) => `${x.p} (${x.seconds.toFixed(0)} s)`).join(' | ')} |`, `| --- | ${phases.map(() => '---:').join(' | ')} |`);
  for (const role of [...SERVER_ROLES, ...LOADGEN_ROLES]) lines.push(`| ${ROLE_NAMES[role]} | ${phases.map((x) => cell(x.roles[role], x.seconds)).join(' | ')} |`);
  lines.push(`| **machine (all processes and the kernel)** | ${phases.map((x) => cell(x.machine, x.seconds)).join(' | ')} |`, '');
  const ramp = phases.find((x) => x.p === 'ramp');
  if (ramp && f?.welcomed) lines.push(`- ramp: c1m cluster ${count((sum(ramp.roles, SERVER_ROLES) * 1e6) / f.welcomed)} µs of CPU per connect, load generator ${count((sum(ramp.roles, LOADGEN_ROLES) * 1e6) / f.welcomed)} µs, machine ${count((ramp.machine * 1e6) / f.welcomed)} µs.`);
  const hold = phases.find((x) => x.p === 'hold');
  if (hold) lines.push(`- hold (--heartbeat ${o.heartbeatSeconds ?? DEFAULTS.heartbeatSeconds}): ${count(hold.heartbeats / hold.seconds)} heartbeats/s received; c1m cluster ${(sum(hold.roles, SERVER_ROLES) / hold.seconds).toFixed(2)} cores, machine ${(hold.machine / hold.seconds).toFixed(2)} cores.`);
  const msgs = phases.find((x) => x.p === 'messages');
  const chunks = samples.filter((s) => s.phase === 'messages').reduce((n, s, i, all) => (i === 0 ? n : n + s.chunks - all[i - 1].chunks), 0);
  if (msgs && chunks > 0) lines.push(`- messages: c1m cluster ${(sum(msgs.roles, SERVER_ROLES) * 1e6 / chunks).toFixed(1)} µs of CPU per delivered chunk, machine ${((msgs.machine * 1e6) / chunks).toFixed(1)} µs.`);
  lines.push('');
  return lines;
}

function messagesSection(r: RunResult): string[] {
  const o = r.options;
  const f = r.flood;
  const samples = r.samples;
  if (!r.steps.length) return [];
  const lines: string[] = [];
  lines.push('## Messages', '');
  const best = r.steps.filter((s) => s.sustained).sort((a, b) => b.msggen.achievedRate - a.msggen.achievedRate)[0];
  lines.push(
    best
      ? `**Highest send rate sustained at p99 <= ${P99_TARGET_MS} ms: ${count(best.msggen.achievedRate)} sends/s` +
        // Against users only: the sends to topics (each to many streams) ride along.
        (best.msggen.toTopics > 0 ? `, of which ${count(Math.round((best.msggen.achievedRate * (best.msggen.sent - best.msggen.toTopics)) / best.msggen.sent))} to users` : '') +
        `, ${count(best.deliveredChunksPerSecond)} delivered chunks/s** (delivery p99 ${best.delivery.p99} ms).`
      : `**No rate tried was sustained at p99 <= ${P99_TARGET_MS} ms** (sustained: at least 95 % of the rate achieved, no errors or skipped sends, delivery p99 <= ${P99_TARGET_MS} ms).`,
    '',
    '| configured sends/s | achieved sends/s | API p99 | streams written/s (server) | chunks received/s (clients) | heartbeats received/s | c1m cluster cores | machine cores | machine CPU per chunk | delivery p50 / p99 / p99.9 / max | skipped | errors | sustained |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |',
    ...r.steps.map((s) => {
      // The samples taken while this step's messages went out: a step's own heartbeats and CPU.
      const during = cpuSeconds(samples, (x) => x.t > s.start && x.t <= s.start + s.msggen.elapsedSeconds);
      const perSecond = (n: number) => (during.seconds > 0 ? n / during.seconds : 0);
      // The step's machine CPU over the chunks the clients received in it: what the floor's steps report (bench/floor.ts).
      const perChunk = s.deliveredChunksPerSecond > 0 ? `${((perSecond(during.machine) * 1e6) / s.deliveredChunksPerSecond).toFixed(1)} µs` : '-';
      return `| ${count(s.rate)} | ${count(s.msggen.achievedRate)} | ${s.msggen.apiLatencyMs.p99} ms | ${count(s.msggen.deliveredPerSecond)} | ${count(s.deliveredChunksPerSecond)} | ${count(perSecond(during.heartbeats))} | ${perSecond(sum(during.roles, SERVER_ROLES)).toFixed(2)} | ${perSecond(during.machine).toFixed(2)} | ${perChunk} | ${ms(s.delivery)} | ${count(s.msggen.skipped)} | ${errorsText(s.msggen.errors)} | ${s.sustained ? 'yes' : 'no'} |`;
    }),
    '',
  );
  if (f)
    lines.push(
      `Delivery latency over the whole run (from the send's t= stamp to the chunk's arrival at the client's socket, ${count(f.deliveryLatencyMs.count)} chunks${o.warmup > 0 ? `, the ${o.warmup} s warm-up at ${count(r.steps[0].rate)} sends/s included` : ''}): p50 / p99 / p99.9 / max ${ms(f.deliveryLatencyMs)}.`,
      `The flood's own lag from arrival to its read (the load generator's share of the cores, not counted above; ${o.readEveryMs > 0 ? `its workers read every ${o.readEveryMs} ms once every stream is open` : 'its workers are woken by each chunk'}): p50 / p99 / p99.9 / max ${ms(f.readLagMs)}.`,
      '',
    );
  return lines;
}

function filesSection(): string[] {
  const lines: string[] = [];
  lines.push('## Charts', '', ...CHARTS.map((c) => `![${c}](${c}.svg)`), '');
  lines.push('## Files', '', '- `samples.json`: one sample a second (streams, RSS and CPU per role, PSS every 10th, kernel memory, chunks, delivery latency)', '- `summary.json`: every figure above as data', '- `cluster.log`: the cluster\'s merged JSON log', '');
  return lines;
}

/** A layered vega-lite chart: one panel of a figure. */
export type Chart = Extract<TopLevelSpec, { layer: unknown }>;

interface Point {
  t: number;
  series: string;
  value: number;
}

/** One chart over time: a line per series, with the run's phases and message steps marked (labels staggered so close ones stay readable). */
function lineSpec(title: string, yTitle: string, points: Point[], marks: { t: number; label: string }[], logY = false): Chart {
  return {
    title,
    width: 720,
    height: 300,
    layer: [
      {
        data: { values: points },
        mark: { type: 'line', point: points.length < 60 ? { size: 12 } : false },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'seconds since start' },
          y: { field: 'value', type: 'quantitative', title: yTitle, scale: logY ? { type: 'log' } : { zero: true } },
          color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'bottom', columns: 3, labelLimit: 320 } },
        },
      },
      {
        data: { values: marks.map((m, i) => ({ ...m, dy: 2 + (i % 3) * 12 })) },
        layer: [
          { mark: { type: 'rule', strokeDash: [4, 4], color: '#888' }, encoding: { x: { field: 't', type: 'quantitative' } } },
          {
            mark: { type: 'text', align: 'left', baseline: 'top', dx: 3, color: '#555' },
            encoding: { x: { field: 't', type: 'quantitative' }, y: { field: 'dy', type: 'quantitative', scale: null }, text: { field: 'label' } },
          },
        ],
      },
    ],
  };
}

/** Vega-Lite charts as one SVG, one above the other (sends/s and chunks/s differ 30-fold: they share no axis). */
export async function renderSvg(...charts: Chart[]): Promise<string> {
  // Loaded only when charts are drawn, as in subsmanager/stats.ts.
  const [vega, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const spec: TopLevelSpec = { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', ...(charts.length === 1 ? charts[0] : { vconcat: charts }) };
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** The charts as SVG text, by name. */
async function chartsSvg(r: RunResult): Promise<Record<(typeof CHARTS)[number], string>> {
  const s = r.samples;
  const series = (name: string, value: (x: Sample) => number | null, of: Sample[] = s): Point[] =>
    of.flatMap((x) => {
      const v = value(x);
      return v === null ? [] : [{ t: x.t, series: name, value: v }];
    });
  const MiB = 2 ** 20;
  const withDeliveries = s.filter((x) => x.delivery.count > 0);
  const marks = [...r.phases.map((p) => ({ t: p.start, label: p.phase })), ...r.steps.map((step) => ({ t: step.start, label: `${count(step.rate)}/s` }))].sort((a, b) => a.t - b.t);
  return {
    connections: await renderSvg(
      lineSpec('Open streams', 'streams', [...series('held by the flood', (x) => x.open), ...series("in the router's directory", (x) => x.serverStreams), ...series('failed', (x) => x.failed), ...series('closed by the server', (x) => x.closed)], marks),
    ),
    memory: await renderSvg(
      lineSpec(
        'Memory',
        'MiB',
        [
          ...series('used (machine)', (x) => x.kernel.usedBytes / MiB),
          ...series('kernel Slab', (x) => x.kernel.slabBytes / MiB),
          ...series('kernel TCP mem', (x) => x.kernel.tcpMemBytes / MiB),
          ...series('edges RSS', (x) => x.rss.edges / MiB),
          ...series('edges PSS', (x) => (x.pss ? x.pss.edges / MiB : null)),
          ...series('router RSS', (x) => x.rss.router / MiB),
          ...series('nats-server RSS', (x) => x.rss.nats / MiB),
          ...series('load generator RSS', (x) => sum(x.rss, LOADGEN_ROLES) / MiB),
        ],
        marks,
      ),
    ),
    cpu: await renderSvg(
      lineSpec(
        'CPU',
        'cores',
        [
          ...series('machine busy', (x) => x.machineCpu.busy),
          ...series('machine softirq', (x) => x.machineCpu.softirq),
          ...series('edges', (x) => x.cpu.edges),
          ...series('router', (x) => x.cpu.router),
          ...series('nats-server', (x) => x.cpu.nats),
          ...series('load generator', (x) => sum(x.cpu, LOADGEN_ROLES)),
        ],
        marks,
      ),
    ),
    throughput: await renderSvg(
      lineSpec('Sends', 'per second', series('sends/s (router)', (x) => x.sendsPerSecond), marks),
      lineSpec('Deliveries', 'per second', series('chunks received/s (clients)', (x) => x.chunksPerSecond), marks),
    ),
    latency: await renderSvg(
      lineSpec(
        'Delivery latency, per second (send to receipt)',
        'ms (log)',
        // A log scale has no zero: latencies under 1 µs do not occur, so clamp to 0.001 ms.
        [...series('p50', (x) => Math.max(0.001, x.delivery.p50), withDeliveries), ...series('p99', (x) => Math.max(0.001, x.delivery.p99), withDeliveries), ...series('max', (x) => Math.max(0.001, x.delivery.max), withDeliveries)],
        marks,
        true,
      ),
    ),
  };
}

export async function writeReport(dir: string, r: RunResult, clusterLog: string): Promise<void> {
  const { samples, ...summary } = r;
  const charts = await chartsSvg(r);
  await Promise.all([
    writeFile(join(dir, 'report.md'), reportMarkdown(r)),
    writeFile(join(dir, 'samples.json'), JSON.stringify(samples, null, 1)),
    writeFile(join(dir, 'summary.json'), JSON.stringify(summary, null, 2)),
    writeFile(join(dir, 'cluster.log'), clusterLog),
    ...Object.entries(charts).map(([name, svg]) => writeFile(join(dir, `${name}.svg`), svg)),
  ]);
}
