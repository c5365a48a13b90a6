/**
 * npm run bench [-- --json] [-- --only runtime,transport,...]
 *   [-- --runtime-events N] [-- --transport-events N] [-- --scaling-events N]
 *   [-- --memory-events N] [-- --tasks N]
 *
 * Runs every benchmark, one child process at a time (each with `--json`),
 * collects their figure and chart-point lines, prints them (as they came with
 * `--json`, as a table without), checks the ratios against the targets
 * (bench/targets.ts) and draws each chart into bench/charts/<chart>.svg. The
 * run's lines are also kept in bench/charts/last-run.jsonl. `npm run bench` sends
 * the build's output to stderr, so with `--json` stdout is the JSON lines (after npm's
 * own two-line banner; `npm run -s bench -- --json` leaves that out).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { type ChartPoint, emitFigure, type Figure } from './figures.js';
import { drawLineChart } from './svg-chart.js';
import { checkTargets } from './targets.js';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    only: { type: 'string' },
    'runtime-events': { type: 'string' },
    'transport-events': { type: 'string' },
    'scaling-events': { type: 'string' },
    'memory-events': { type: 'string' },
    tasks: { type: 'string' },
  },
});
const json = values.json;
const ROOT = resolve(import.meta.dirname, '../..');
const DIST = join(ROOT, 'bench/dist');
const CHARTS = join(ROOT, 'bench/charts');

interface Bench {
  name: string;
  script: string;
  nodeFlags?: string[];
  args: string[];
}

const size = (flag: string, value: string | undefined) => (value === undefined ? [] : [flag, value]);
const BENCHES: Bench[] = [
  { name: 'runtime', script: 'runtime-bench.js', nodeFlags: ['--expose-gc'], args: size('--events', values['runtime-events']) },
  { name: 'transport', script: 'transport-bench.js', args: size('--events', values['transport-events']) },
  {
    name: 'fabric-load',
    script: 'fabric-load-bench.js',
    args: [...size('--scaling-events', values['scaling-events']), ...size('--memory-events', values['memory-events'])],
  },
  { name: 'packages', script: 'packages-bench.js', args: [] },
  { name: 'tasks', script: 'tasks-bench.js', args: size('--tasks', values.tasks) },
  // Present once the BullMQ store's own benchmark is built.
  { name: 'bullmq', script: 'bullmq-bench.js', args: size('--tasks', values.tasks) },
];
const only = values.only?.split(',');
if (only) {
  const unknown = only.filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length > 0)
    throw new Error(`--only: no benchmark named ${unknown.join(', ')} (there are ${BENCHES.map((b) => b.name).join(', ')})`);
}

const slug = (s: string) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_|_$/g, '');

/** A line of the older per-system shape (`{"system": ..., "process_per_s": ...}`) as figures. */
function legacyFigures(bench: string, line: Record<string, unknown>): Figure[] {
  const subject = typeof line.system === 'string' ? line.system : bench;
  return Object.entries(line)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([key, value]) => ({
      bench,
      figure: `${slug(subject)}_${key}`,
      value,
      unit: key.endsWith('_ms') ? 'ms' : key.endsWith('_per_s') ? '/s' : key.endsWith('_bytes') ? 'bytes' : '',
      subject,
    }));
}

const figures: Figure[] = [];
const points: ChartPoint[] = [];
const lines: string[] = [];
const failed: string[] = [];

function take(bench: string, text: string): void {
  if (!text.startsWith('{')) return;
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return;
  }
  const { kind, ...rest } = parsed;
  const items: (Figure | ChartPoint)[] =
    kind === 'figure' || kind === 'point' ? [rest as unknown as Figure | ChartPoint] : legacyFigures(bench, rest);
  for (const item of items) {
    const isPoint = kind === 'point';
    if (isPoint) points.push(item as ChartPoint);
    else figures.push(item as Figure);
    const line = JSON.stringify({ kind: isPoint ? 'point' : 'figure', ...item });
    lines.push(line);
    if (json) console.log(line);
    else if (!isPoint) emitFigure(false, item as Figure);
  }
}

function runBench(bench: Bench): Promise<void> {
  const child = spawn(process.execPath, [...(bench.nodeFlags ?? []), join(DIST, bench.script), '--json', ...bench.args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let pending = '';
  child.stdout.on('data', (d: Buffer) => {
    pending += d.toString();
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const part of parts) take(bench.name, part.trim());
  });
  return new Promise((ok) =>
    child.on('exit', (code, signal) => {
      take(bench.name, pending.trim());
      if (code !== 0) {
        failed.push(`${bench.name} (exit ${code ?? signal})`);
        console.error(`bench ${bench.name}: exited ${code ?? signal}`);
      }
      ok();
    }),
  );
}

/** The machine's load beside the figures: other work on a shared machine moves absolute rates, not ratios. */
function machine(when: string): void {
  take(
    'machine',
    JSON.stringify({
      kind: 'figure',
      bench: 'machine',
      figure: `load_average_1m_${when}`,
      value: Number((loadavg()[0] as number).toFixed(2)),
      unit: 'runnable',
      subject: `${cpus().length} cores, node ${process.versions.node}`,
    }),
  );
}

const started = performance.now();
machine('start');
for (const bench of BENCHES) {
  if (only && !only.includes(bench.name)) continue;
  if (!existsSync(join(DIST, bench.script))) {
    if (bench.name !== 'bullmq') failed.push(`${bench.name} (not built)`);
    continue;
  }
  const t0 = performance.now();
  await runBench(bench);
  console.error(`bench ${bench.name}: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

machine('end');
for (const r of checkTargets(figures)) {
  const { target } = r;
  const f: Figure = {
    bench: 'targets',
    figure: target.name,
    value: r.ratio === undefined ? Number.NaN : Number(r.ratio.toFixed(3)),
    unit: 'ratio',
    subject: r.ratio === undefined ? 'not measured in this run' : r.met ? 'met' : 'NOT MET',
    settings: {
      target: `${target.rule === 'min' ? '≥' : '≤'} ${target.bound}`,
      what: target.what,
      ...(r.numerator && r.denominator ? { of: `${r.numerator.figure} / ${r.denominator.figure}` } : {}),
    },
  };
  const line = JSON.stringify({ kind: 'figure', ...f, value: r.ratio === undefined ? null : f.value });
  lines.push(line);
  if (json) console.log(line);
  else emitFigure(false, f);
}

mkdirSync(CHARTS, { recursive: true });
const charts = new Map<string, ChartPoint[]>();
for (const p of points) charts.set(p.chart, [...(charts.get(p.chart) ?? []), p]);
for (const [chart, chartPoints] of charts) {
  writeFileSync(join(CHARTS, `${chart}.svg`), drawLineChart(chart, chartPoints));
  console.error(`chart bench/charts/${chart}.svg: ${chartPoints.length} points`);
}
writeFileSync(join(CHARTS, 'last-run.jsonl'), `${lines.join('\n')}\n`);
console.error(`whole run: ${((performance.now() - started) / 1000).toFixed(0)} s`);
if (failed.length > 0) {
  console.error(`failed: ${failed.join(', ')}`);
  process.exitCode = 1;
}
