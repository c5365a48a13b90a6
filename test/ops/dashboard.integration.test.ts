import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { PostgresTaskStore } from '../../packages/node-agent/src/index.js';
import { killAll, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';
import { freePort } from '../support/servers.js';

const redisUrl = inject('redisUrl');
const databaseUrl = inject('databaseUrl');
const DASHBOARD = join(ROOT, 'deploy/grafana/stagefabric-dashboard.json');
const CHOCOLATES = join(ROOT, 'examples/chocolates/stages.js');

interface Panel {
  readonly title: string;
  readonly targets: readonly { readonly expr: string }[];
}

let prometheus: ChildProcess | undefined;
afterEach(async () => {
  prometheus?.kill('SIGTERM');
  prometheus = undefined;
  await killAll();
});

async function query(port: number, expr: string): Promise<unknown[]> {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as { status: string; data?: { result: unknown[] }; error?: string };
  if (body.status !== 'success') throw new Error(`query failed: ${body.error} (${expr})`);
  return body.data?.result ?? [];
}

describe('the Grafana dashboard on live data', () => {
  it('every panel query returns data from a real Prometheus scraping two agents (chocolates and a task drain)', async () => {
    const f = await testFabric(redisUrl);
    const schema = `sf_d${randomUUID().slice(0, 8)}`;
    const store = new PostgresTaskStore({ url: databaseUrl, schema });
    await store.migrate();
    await writeFile(f.file('handlers.mjs'), 'export const work = (args) => new Promise((r) => setTimeout(r, args.ms));\n');
    const topology = await f.topology(`
tasks: { handlers: ./handlers.mjs, schema: ${schema} }
stages:
  maker: { module: ${CHOCOLATES}, args: { total: 100000000 }, nodes: [kitchen] }
  wrapper: { module: ${CHOCOLATES}, args: { msPerChocolate: 1 }, nodes: [packing], subscribe: [{ to: maker, maxDemand: 6, minDemand: 3 }] }
  boxer: { module: ${CHOCOLATES}, args: { msPerBox: 20 }, nodes: [packing], subscribe: [{ to: wrapper, maxDemand: 6, minDemand: 3 }] }
  tasks: { module: stagefabric:task-producer, args: { pollIntervalMs: 200 }, nodes: [kitchen] }
  runner: { module: stagefabric:task-runner, nodes: [kitchen], subscribe: [{ to: tasks, maxDemand: 20 }] }
`);
    await store.enqueue(
      Array.from({ length: 20_000 }, (_, i) => ({ name: 'work', args: { ms: 2 + (i % 5) }, options: { maxAttempts: 1 } })),
    );
    const ports = [await freePort(), await freePort()] as const;
    f.agent(topology, 'kitchen', { DATABASE_URL: databaseUrl, STAGEFABRIC_METRICS_PORT: String(ports[0]) });
    f.agent(topology, 'packing', { DATABASE_URL: databaseUrl, STAGEFABRIC_METRICS_PORT: String(ports[1]) });

    const dir = await mkdtemp(join(tmpdir(), 'sf-prom-'));
    const promPort = await freePort();
    await writeFile(
      join(dir, 'prometheus.yml'),
      `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: stagefabric\n    static_configs:\n      - targets: ['127.0.0.1:${ports[0]}', '127.0.0.1:${ports[1]}']\n`,
    );
    prometheus = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
      ],
      {
        stdio: 'ignore',
      },
    );
    try {
      await waitFor(
        async () => (await query(promPort, 'up == 1').catch(() => [])).length === 2,
        'Prometheus to scrape both agents',
        30_000,
      );
      const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] };
      expect(dashboard.panels.length).toBeGreaterThanOrEqual(12);
      const empty: string[] = [];
      for (const panel of dashboard.panels) {
        for (const target of panel.targets) {
          const expr = target.expr.replaceAll('$__rate_interval', '15s');
          // Rates and quantiles need a few scrapes; a panel still empty after the deadline fails, named.
          const ok = await waitFor(async () => (await query(promPort, expr)).length > 0, `panel "${panel.title}"`, 20_000).then(
            () => true,
            () => false,
          );
          if (!ok) empty.push(`${panel.title}: ${target.expr}`);
        }
      }
      expect(empty).toEqual([]);
    } finally {
      await store.close();
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
      prometheus?.kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
