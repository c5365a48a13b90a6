import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { AgentProcess, killAll, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';

const databaseUrl = inject('databaseUrl');
const HANDLERS = join(ROOT, 'test/tasks/handlers.mjs');
const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');

afterEach(async () => {
  await killAll();
});

describe('schedules declared in a topology, three agents (PostgreSQL)', () => {
  it('a schedule firing every second enqueues one task per second among three agents, each run once; stagectl schedules shows its next fire', async () => {
    const schema = `sf_sa${randomUUID().slice(0, 8)}`;
    const runs = `${schema}.task_runs`;
    const admin = new pg.Pool({ connectionString: databaseUrl, max: 2 });
    const store = new PostgresTaskStore({ url: databaseUrl, schema });
    try {
      await store.migrate();
      await admin.query(`CREATE TABLE ${runs} (task_id bigint NOT NULL, node text NOT NULL, at timestamptz NOT NULL DEFAULT now())`);
      const f = await testFabric('redis://unused');
      const topology = await f.topology(`
tasks:
  handlers: ${HANDLERS}
  schema: ${schema}
  schedules:
    every-second:
      cron: '* * * * * *'
      task: record
      options: { queue: ticks, maxAttempts: 1 }
stages:
  tasks: { module: stagefabric:task-producer, args: { queue: ticks, pollIntervalMs: 200 } }
  runner: { module: stagefabric:task-runner, subscribe: [tasks] }
`);
      const agents = ['s1', 's2', 's3'].map(
        (node) =>
          new AgentProcess(topology, node, { DATABASE_URL: databaseUrl, TASK_RUNS_TABLE: runs, STAGEFABRIC_NODE: node, REDIS_URL: '' }),
      );
      const count = async (sql: string) => Number((await admin.query(sql)).rows[0]?.n ?? 0);
      await waitFor(async () => (await count(`SELECT count(*) AS n FROM ${runs}`)) >= 6, 'six fires run', 60_000);

      const listed = spawnSync(process.execPath, [STAGECTL, 'schedules', '--schema', schema, '--json'], {
        encoding: 'utf8',
        env: { ...process.env, DATABASE_URL: databaseUrl },
      });
      expect(listed.status, listed.stderr).toBe(0);
      const [schedule] = JSON.parse(listed.stdout) as { name: string; cron: string; nextFireAt: string; lastFireAt: string }[];
      expect(schedule).toMatchObject({ name: 'every-second', cron: '* * * * * *', tz: 'UTC' });
      expect(Date.parse(schedule?.nextFireAt ?? '')).toBeGreaterThan(Date.parse(schedule?.lastFireAt ?? '') - 1);

      await Promise.all(agents.map((a) => a.kill('SIGTERM')));
      for (const a of agents) expect(await a.exited, a.stderr.slice(-2000)).toBe(0);
      const tasks = (
        await admin.query<{ unique_key: string }>(`SELECT unique_key FROM ${schema}.tasks WHERE name = 'record' ORDER BY unique_key`)
      ).rows.map((r) => Date.parse(r.unique_key.replace('schedule:every-second:', '')));
      // One task per fire: every second from the first fire to the last, none twice, none missing.
      expect(tasks.length).toBeGreaterThanOrEqual(6);
      expect(tasks).toEqual(tasks.map((_, i) => (tasks[0] as number) + i * 1000));
      expect(await count(`SELECT count(*) AS n FROM (SELECT task_id FROM ${runs} GROUP BY task_id HAVING count(*) > 1) x`)).toBe(0);
      // Each fire was logged by the one agent whose scheduler took it.
      const fireLogs = agents.flatMap((a) => a.logs('schedule fired: task enqueued'));
      expect(fireLogs).toHaveLength(tasks.length);
    } finally {
      await store.close();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
      await admin.end();
    }
  }, 120_000);
});
