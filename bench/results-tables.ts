/**
 * node bench/dist/results-tables.js [bench/charts/last-run.jsonl]
 *
 * Prints the figures of one `npm run bench -- --json` run as Markdown
 * tables, one per benchmark, for bench/RESULTS.md: the figures are copied
 * from the run, never typed in by hand.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Figure } from './figures.js';
import { ROOT } from './processes.js';

const path = process.argv[2] ?? join(ROOT, 'bench/charts/last-run.jsonl');
const figures = readFileSync(path, 'utf8')
  .split('\n')
  .filter((l) => l.startsWith('{'))
  .map((l) => JSON.parse(l) as Figure & { kind: string; value: number | null })
  .filter((f) => f.kind === 'figure');

function show(v: number | null, unit: string): string {
  if (v === null) return 'not measured';
  if (unit === 'bytes') return Math.abs(v) >= 2 ** 20 ? `${(v / 2 ** 20).toFixed(1)} MiB` : `${(v / 1024).toFixed(0)} KiB`;
  if (unit === 'ratio') return `${v.toFixed(2)}×`;
  if (unit.endsWith('/s')) return v >= 1e6 ? `${(v / 1e6).toFixed(2)} M ${unit}` : `${Math.round(v).toLocaleString('en-US')} ${unit}`;
  return `${Number.isInteger(v) ? v.toLocaleString('en-US') : v.toPrecision(4)} ${unit}`;
}

const cell = (s: string) => s.replace(/\|/g, '\\|');
for (const bench of [...new Set(figures.map((f) => f.bench))]) {
  console.log(`\n### ${bench}\n`);
  console.log('| figure | value | subject | settings |');
  console.log('| --- | --- | --- | --- |');
  for (const f of figures.filter((x) => x.bench === bench)) {
    const settings =
      f.settings === undefined
        ? ''
        : JSON.stringify(f.settings)
            .replace(/^\{|\}$/g, '')
            .replace(/"/g, '');
    console.log(`| \`${f.figure}\` | ${show(f.value, f.unit)} | ${cell(f.subject)} | ${cell(settings)} |`);
  }
}
