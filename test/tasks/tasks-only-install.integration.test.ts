import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { afterAll, expect, inject, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const url = inject('databaseUrl');
const schema = `sf_only${randomUUID().slice(0, 8)}`;
const dir = mkdtempSync(join(tmpdir(), 'sf-tasks-only-'));

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
});

it('an app that installs only @stagefabric/tasks and pg runs durable tasks on PostgreSQL (examples/tasks-only)', async () => {
  // The packages as npm would publish them (built dist, the declared dependencies), installed into an app of its own.
  execFileSync('npm', ['pack', '-w', 'packages/runtime', '-w', 'packages/tasks', '--pack-destination', dir], { cwd: ROOT, stdio: 'pipe' });
  const tarball = (name: string) => readdirSync(dir).find((f) => f.startsWith(`stagefabric-${name}-`)) as string;
  const example = JSON.parse(readFileSync(join(ROOT, 'examples/tasks-only/package.json'), 'utf8'));
  const app = join(dir, 'app');
  mkdirSync(app);
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({
      ...example,
      dependencies: {
        '@stagefabric/tasks': `file:../${tarball('tasks')}`,
        // Not on a registry here: the tarball stands in for the version @stagefabric/tasks depends on.
        '@stagefabric/runtime': `file:../${tarball('runtime')}`,
        pg: example.dependencies.pg,
      },
    }),
  );
  copyFileSync(join(ROOT, 'examples/tasks-only/app.mjs'), join(app, 'app.mjs'));
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: app, encoding: 'utf8' });
  expect(install.status, install.stderr).toBe(0);

  // None of the other stores' drivers, nor the fabric's or the agent's dependencies, came with it.
  // @opentelemetry/api is an optional peer: without it, nothing is traced and everything runs.
  for (const absent of [
    'bullmq',
    'ioredis',
    '@electric-sql/pglite',
    'msgpackr',
    'pino',
    'prom-client',
    '@stagefabric/node-agent',
    '@opentelemetry/api',
  ])
    expect(existsSync(join(app, 'node_modules', absent)), `${absent} installed`).toBe(false);

  const run = spawnSync(process.execPath, ['app.mjs'], {
    cwd: app,
    encoding: 'utf8',
    env: { ...process.env, DATABASE_URL: url, TASKS_SCHEMA: schema, TASKS: '300' },
    timeout: 60_000,
  });
  expect(run.status, run.stderr).toBe(0);
  expect(run.stdout).toMatch(/^300 tasks succeeded in \d+ ms; 300 thumbnails made$/m);
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const { rows } = await admin.query(`SELECT state, count(*)::int AS n, max(attempt) AS attempts FROM ${schema}.tasks GROUP BY state`);
  await admin.end();
  expect(rows).toEqual([{ state: 'success', n: 300, attempts: 1 }]);
}, 120_000);
