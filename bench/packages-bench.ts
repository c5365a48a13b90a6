/**
 * node bench/dist/packages-bench.js [--json] [--imports N]
 *
 * What each package costs a user who installs only it (issue 15): for
 * @stagefabric/runtime, fabric, tasks, node-agent and cli, the packed
 * tarball (`npm pack`: packed and unpacked bytes, files), the node_modules
 * footprint of a fresh consumer that depends on that package alone (its
 * Stagefabric dependencies from their own tarballs, the rest from npm's
 * cache, optional peers left out as npm leaves them out), and the import
 * time in a fresh node process inside that consumer, median of N (default
 * 5), beside a bare `node` start. The CLI is timed as `stagectl --version`.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { emitFigure } from './figures.js';
import { ROOT } from './processes.js';

const { values } = parseArgs({
  options: { json: { type: 'boolean', default: false }, imports: { type: 'string', default: '5' } },
});
const json = values.json;
const IMPORTS = Number(values.imports);
const PACKAGES = ['runtime', 'fabric', 'tasks', 'node-agent', 'cli'];

interface Manifest {
  name: string;
  version: string;
  dependencies?: Record<string, string>;
}
const manifest = (dir: string) => JSON.parse(readFileSync(join(ROOT, 'packages', dir, 'package.json'), 'utf8')) as Manifest;
const dirOf = new Map(PACKAGES.map((d) => [manifest(d).name, d]));

/** The package and every Stagefabric package it depends on, directly or not. */
function closure(dir: string, seen = new Set<string>()): Set<string> {
  if (seen.has(dir)) return seen;
  seen.add(dir);
  for (const dep of Object.keys(manifest(dir).dependencies ?? {})) {
    const d = dirOf.get(dep);
    if (d !== undefined) closure(d, seen);
  }
  return seen;
}

/** Bytes and files under `path` (apparent sizes, as `du -sb`). */
function footprint(path: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const p = join(path, entry.name);
    if (entry.isDirectory()) {
      const sub = footprint(p);
      bytes += sub.bytes;
      files += sub.files;
    } else if (entry.isFile()) {
      bytes += statSync(p).size;
      files++;
    }
  }
  return { bytes, files };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Milliseconds from process start to the end of `code`, as the process itself measures it. */
function timedNode(cwd: string, args: string[]): number {
  const start = performance.now();
  execFileSync(process.execPath, args, { cwd, stdio: 'ignore' });
  return performance.now() - start;
}

function importMs(cwd: string, specifier: string): number {
  const code = `const t = performance.now(); await import(${JSON.stringify(specifier)}); console.log(performance.now() - t);`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd, encoding: 'utf8' });
  return Number(out.trim());
}

const work = mkdtempSync(join(tmpdir(), 'sf-packages-'));
try {
  const tarballs = new Map<string, string>();
  for (const dir of PACKAGES) {
    const [packed] = JSON.parse(
      execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: join(ROOT, 'packages', dir), encoding: 'utf8' }),
    ) as { filename: string; size: number; unpackedSize: number; entryCount: number }[];
    if (packed === undefined) throw new Error(`npm pack in packages/${dir} reported nothing`);
    tarballs.set(dir, join(work, packed.filename));
    const subject = `${manifest(dir).name} ${manifest(dir).version}`;
    const fig = (figure: string, value: number, unit: string) =>
      emitFigure(json, {
        bench: 'packages',
        figure: `${dir.replace('-', '_')}_${figure}`,
        value,
        unit,
        subject,
        settings: { how: 'npm pack' },
      });
    fig('packed_bytes', packed.size, 'bytes');
    fig('unpacked_bytes', packed.unpackedSize, 'bytes');
    fig('packed_files', packed.entryCount, 'files');
  }

  const bare = median(Array.from({ length: IMPORTS }, () => timedNode(work, ['-e', '0'])));
  emitFigure(json, {
    bench: 'packages',
    figure: 'node_start_ms',
    value: Number(bare.toFixed(1)),
    unit: 'ms',
    subject: `node ${process.versions.node}`,
    settings: { how: 'node -e 0, wall time', median_of: IMPORTS },
  });

  for (const dir of PACKAGES) {
    const m = manifest(dir);
    const consumer = join(work, `consumer-${dir}`);
    mkdirSync(consumer);
    // Its Stagefabric dependencies are not on the registry: they resolve to their tarballs.
    const overrides = Object.fromEntries([...closure(dir)].map((d) => [manifest(d).name, `file:${tarballs.get(d)}`]));
    writeFileSync(
      join(consumer, 'package.json'),
      JSON.stringify({
        name: `consumer-of-${dir}`,
        private: true,
        type: 'module',
        dependencies: { [m.name]: `file:${tarballs.get(dir)}` },
        overrides,
      }),
    );
    execFileSync('npm', ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error'], {
      cwd: consumer,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const { bytes, files } = footprint(join(consumer, 'node_modules'));
    const packages = readdirSync(join(consumer, 'node_modules'), { withFileTypes: true }).reduce(
      (n, e) => n + (e.name.startsWith('@') ? readdirSync(join(consumer, 'node_modules', e.name)).length : e.name.startsWith('.') ? 0 : 1),
      0,
    );
    const subject = `${m.name} ${m.version}`;
    const settings = { how: `npm install of ${m.name} alone, --omit=dev` };
    const fig = (figure: string, value: number, unit: string, s: Record<string, unknown> = settings) =>
      emitFigure(json, { bench: 'packages', figure: `${dir.replace('-', '_')}_${figure}`, value, unit, subject, settings: s });
    fig('installed_bytes', bytes, 'bytes');
    fig('installed_files', files, 'files');
    fig('installed_packages', packages, 'packages');
    const ms =
      dir === 'cli'
        ? median(Array.from({ length: IMPORTS }, () => timedNode(consumer, ['node_modules/@stagefabric/cli/bin/stagectl.js', '--version'])))
        : median(Array.from({ length: IMPORTS }, () => importMs(consumer, m.name)));
    fig(dir === 'cli' ? 'stagectl_version_ms' : 'import_ms', Number(ms.toFixed(1)), 'ms', {
      how: dir === 'cli' ? 'stagectl --version, wall time of the process' : `await import('${m.name}') in a fresh node`,
      median_of: IMPORTS,
    });
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
