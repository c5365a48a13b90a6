import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { AgentProcess, killAll, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';
import { startLocalPostgres } from '../support/servers.js';

const databaseUrl = inject('databaseUrl');
const HANDLERS = join(ROOT, 'test/tasks/handlers.mjs');

afterEach(async () => {
  await killAll();
});

/** A schema and a runs table of the test's own; the store on it; agents that drain it. */
async function drainSetup(url: string, runner: string, runnerArgs = '') {
  const schema = `sf_t${randomUUID().slice(0, 8)}`;
  const runs = `${schema}.task_runs`;
  // A pool, so the checker's own connection comes back after a database restart.
  const admin = new pg.Pool({ connectionString: url, max: 2 });
  admin.on('error', () => {});
  const store = new PostgresTaskStore({ url, schema });
  await store.migrate();
  await admin.query(`CREATE TABLE ${runs} (task_id bigint NOT NULL, node text NOT NULL, at timestamptz NOT NULL DEFAULT now())`);
  const f = await testFabric('redis://unused');
  const topology = await f.topology(`
tasks: { handlers: ${HANDLERS}, schema: ${schema} }
stages:
  tasks: { module: stagefabric:task-producer, args: { pollIntervalMs: 200, leaseMs: 1500 } }
  runner: { module: stagefabric:task-runner, args: { leaseMs: 1500${runnerArgs} }, subscribe: [{ to: tasks, ${runner} }] }
`);
  const agent = (node: string) =>
    new AgentProcess(topology, node, { DATABASE_URL: url, TASK_RUNS_TABLE: runs, STAGEFABRIC_NODE: node, REDIS_URL: '' });
  const count = async (sql: string) => Number((await admin.query(sql)).rows[0]?.n ?? 0);
  const cleanup = async () => {
    await store.close();
    await admin.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
    await admin.end();
  };
  return { schema, runs, store, agent, count, cleanup };
}

describe('task drains across agent processes (PostgreSQL)', () => {
  it('four agents drain 20 000 tasks together: each succeeds exactly once, none left behind', async () => {
    const d = await drainSetup(databaseUrl, 'maxDemand: 50');
    try {
      for (let i = 0; i < 20; i++)
        await d.store.enqueue(Array.from({ length: 1000 }, (_, n) => ({ name: 'record', args: { n: i * 1000 + n } })));
      const agents = ['w1', 'w2', 'w3', 'w4'].map((n) => d.agent(n));
      await waitFor(
        async () => (await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'success'`)) === 20_000,
        '20 000 successes',
        120_000,
      );
      expect(await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state <> 'success'`)).toBe(0);
      expect(await d.count(`SELECT count(*) AS n FROM ${d.runs}`)).toBe(20_000);
      expect(await d.count(`SELECT count(*) AS n FROM (SELECT task_id FROM ${d.runs} GROUP BY task_id HAVING count(*) > 1) x`)).toBe(0);
      // The work was shared.
      expect(await d.count(`SELECT count(DISTINCT node) AS n FROM ${d.runs}`)).toBeGreaterThan(1);
      await Promise.all(agents.map((a) => a.kill('SIGTERM')));
      for (const a of agents) expect(await a.exited).toBe(0);
    } finally {
      await d.cleanup();
    }
  }, 180_000);

  it('kill -9 an agent holding running tasks: each of them ends in success on another agent after its lease expires', async () => {
    const d = await drainSetup(databaseUrl, 'maxDemand: 20');
    try {
      await d.store.enqueue(Array.from({ length: 40 }, (_, n) => ({ name: 'record', args: { n, sleepMs: 800 } })));
      const victim = d.agent('victim');
      await waitFor(
        async () => (await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'running'`)) >= 10,
        'the victim to hold running tasks',
      );
      await victim.kill('SIGKILL');
      const held = await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'running'`);
      expect(held).toBeGreaterThan(0);
      d.agent('survivor');
      await waitFor(
        async () => (await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'success'`)) === 40,
        'all 40 to succeed',
        60_000,
      );
      // The survivor ran what the victim held; nothing is left.
      expect(await d.count(`SELECT count(DISTINCT task_id) AS n FROM ${d.runs} WHERE node = 'survivor'`)).toBeGreaterThanOrEqual(held);
    } finally {
      await d.cleanup();
    }
  });

  it('SIGTERM during a drain: running tasks finish, prefetched ones go back to waiting, none lost, exit 0 within the grace period', async () => {
    // 10 running, 30 more prefetched.
    const d = await drainSetup(databaseUrl, 'maxDemand: 40', ', concurrency: 10');
    try {
      await d.store.enqueue(Array.from({ length: 200 }, (_, n) => ({ name: 'record', args: { n, sleepMs: 300 } })));
      const first = d.agent('first');
      await waitFor(async () => (await d.count(`SELECT count(*) AS n FROM ${d.runs}`)) >= 20, 'the drain to be under way');
      const stoppedAt = Date.now();
      await first.kill('SIGTERM');
      expect(await first.exited).toBe(0);
      expect(Date.now() - stoppedAt).toBeLessThan(10_000);
      // Nothing is left held by the stopped agent: every task finished or is waiting again.
      expect(await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'running'`)).toBe(0);
      expect(await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state NOT IN ('success', 'waiting')`)).toBe(0);
      d.agent('second');
      await waitFor(
        async () => (await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'success'`)) === 200,
        'all 200 to succeed',
        60_000,
      );
      expect(await d.count(`SELECT count(DISTINCT task_id) AS n FROM ${d.runs}`)).toBe(200);
    } finally {
      await d.cleanup();
    }
  }, 120_000);

  it('restart PostgreSQL in the middle of a drain: producers reconnect and finish; nothing lost', async () => {
    const own = await startLocalPostgres();
    try {
      const d = await drainSetup(own.url, 'maxDemand: 50');
      try {
        await d.store.enqueue(Array.from({ length: 3000 }, (_, n) => ({ name: 'record', args: { n, sleepMs: 2 } })));
        d.agent('a1');
        d.agent('a2');
        await waitFor(
          async () => (await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'success'`)) > 300,
          '300 successes before the restart',
        );
        await own.restart();
        await waitFor(
          async () => (await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'success'`).catch(() => 0)) === 3000,
          'all 3000 after the restart',
          90_000,
        );
        expect(await d.count(`SELECT count(DISTINCT task_id) AS n FROM ${d.runs}`)).toBe(3000);
      } finally {
        await killAll();
        await d.cleanup().catch(() => {});
      }
    } finally {
      await own.stop();
    }
  }, 180_000);

  it('an agent started while PostgreSQL is down waits for it, then drains', async () => {
    const own = await startLocalPostgres();
    try {
      const d = await drainSetup(own.url, 'maxDemand: 50');
      try {
        await d.store.enqueue(Array.from({ length: 200 }, (_, n) => ({ name: 'record', args: { n } })));
        await own.crash();
        const agent = d.agent('a1');
        try {
          await waitFor(() => agent.logs('task store unreachable; trying again').length >= 2, 'the agent to wait for the store');
        } finally {
          await own.start();
        }
        await waitFor(
          async () => (await d.count(`SELECT count(*) AS n FROM ${d.schema}.tasks WHERE state = 'success'`).catch(() => 0)) === 200,
          'all 200 once the store is back',
          30_000,
        );
        expect(agent.child.exitCode).toBeNull();
        expect(await d.count(`SELECT count(DISTINCT task_id) AS n FROM ${d.runs}`)).toBe(200);
      } finally {
        await killAll();
        await d.cleanup().catch(() => {});
      }
    } finally {
      await own.stop();
    }
  }, 120_000);
});

describe('task store on PostgreSQL', () => {
  it('transactional enqueue: a task enqueued in a transaction exists only if it commits', async () => {
    const schema = `sf_t${randomUUID().slice(0, 8)}`;
    const store = new PostgresTaskStore({ url: databaseUrl, schema });
    await store.migrate();
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const query = async <R>(text: string, params?: readonly unknown[]) => (await client.query(text, params as unknown[])).rows as R[];
      await client.query('BEGIN');
      await store.enqueueWith(query, [{ name: 'rolled-back' }]);
      await client.query('ROLLBACK');
      await client.query('BEGIN');
      await store.enqueueWith(query, [{ name: 'committed' }]);
      expect(await store.counts()).toEqual([]);
      await client.query('COMMIT');
      expect((await store.list({})).map((t) => t.name)).toEqual(['committed']);
    } finally {
      await client.end();
      await store.close();
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    }
  });

  it('a connection of the store that the server drops in a transaction does not crash the process', async () => {
    const errors: Error[] = [];
    const store = new PostgresTaskStore({ url: databaseUrl, onError: (e) => errors.push(e) });
    const client = await store.pool.connect();
    try {
      // pg reports the server going away to the failed query, then again on the client itself: the second must be caught.
      const ended = new Promise((r) => client.once('end', r));
      await expect(client.query('SELECT pg_terminate_backend(pg_backend_pid())')).rejects.toThrow(/terminat/);
      await ended;
      await waitFor(() => errors.some((e) => /terminated unexpectedly/.test(e.message)), 'the drop to be reported through onError');
    } finally {
      client.release(true);
      await store.close();
    }
  });

  it('succeedWith: the handler writes and the success commit together; a run that lost its lease cannot succeed', async () => {
    const schema = `sf_t${randomUUID().slice(0, 8)}`;
    const store = new PostgresTaskStore({ url: databaseUrl, schema });
    await store.migrate();
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const query = async <R>(text: string, params?: readonly unknown[]) => (await client.query(text, params as unknown[])).rows as R[];
      await client.query(`CREATE TABLE ${schema}.effects (task_id bigint NOT NULL, attempt integer NOT NULL)`);
      const [{ id } = { id: '' }] = await store.enqueue([{ name: 'once' }]);
      // The first run stalls past its lease; the task is recovered and claimed again by another node.
      const [stalled] = await store.claim('default', 1, 'node-a', 1);
      await waitFor(async () => (await store.recoverExpired()) === 1, 'the stalled lease to lapse');
      const [second] = await store.claim('default', 1, 'node-b', 60_000);
      if (stalled === undefined || second === undefined) throw new Error('claims returned nothing');
      expect(second.attempt).toBe(2);
      const attempt = async (task: typeof stalled, commit: boolean) => {
        await client.query('BEGIN');
        await query(`INSERT INTO ${schema}.effects VALUES ($1, $2)`, [task.id, task.attempt]);
        const held = await store.succeedWith(query, task);
        await client.query(held && commit ? 'COMMIT' : 'ROLLBACK');
        return held;
      };
      expect(await attempt(stalled, true)).toBe(false);
      // Rolled back after succeeding: neither the effect nor the success happened.
      expect(await attempt(second, false)).toBe(true);
      expect((await store.get(id))?.state).toBe('running');
      expect(await attempt(second, true)).toBe(true);
      expect((await store.get(id))?.state).toBe('success');
      expect((await client.query(`SELECT task_id::text, attempt FROM ${schema}.effects`)).rows).toEqual([{ task_id: id, attempt: 2 }]);
      // The runner's own outcome write, arriving later, changes nothing.
      expect(await store.complete([{ id, attempt: second.attempt, claimant: second.claimant, status: 'success' }])).toEqual([]);
    } finally {
      await client.end();
      await store.close();
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`);
      await admin.end();
    }
  });
});
