/**
 * The one shape every benchmark reports in. With `--json` a benchmark prints
 * one line per figure (its own and its peers'), and one line per chart point;
 * `npm run bench` collects them, checks the ratios against their targets and
 * draws the charts.
 */
export interface Figure {
  /** Which benchmark measured it: runtime, transport, tasks, bullmq, memory, packages. */
  bench: string;
  /** A stable name, e.g. `pg_store_tasks_per_s`, `graphile_worker_best_tasks_per_s`. */
  figure: string;
  value: number;
  unit: string;
  /** Who was measured: `stagefabric` or the peer's name and version, e.g. `graphile-worker 0.16.6`. */
  subject: string;
  /** The settings the subject ran with, printed beside its row. */
  settings?: Record<string, unknown>;
}

/** One point of a curve: how a figure grows with load. */
export interface ChartPoint {
  bench: string;
  /** The chart's file name without extension, e.g. `tasks-scaling`. */
  chart: string;
  /** One line of the chart, e.g. `postgres store`. */
  series: string;
  x: number;
  y: number;
  xLabel: string;
  yLabel: string;
}

export function emitFigure(json: boolean, f: Figure): void {
  if (json) console.log(JSON.stringify({ kind: 'figure', ...f }));
  else
    console.log(
      `${f.bench.padEnd(10)} ${f.figure.padEnd(44)} ${formatValue(f.value).padStart(12)} ${f.unit.padEnd(10)} ${f.subject}${f.settings ? `  ${JSON.stringify(f.settings)}` : ''}`,
    );
}

export function emitPoint(json: boolean, p: ChartPoint): void {
  if (json) console.log(JSON.stringify({ kind: 'point', ...p }));
  else console.log(`${p.bench.padEnd(10)} ${p.chart}/${p.series}: ${p.xLabel} ${p.x} → ${formatValue(p.y)} ${p.yLabel}`);
}

function formatValue(v: number): string {
  return Number.isInteger(v) ? v.toLocaleString('en-US') : v.toPrecision(4);
}
