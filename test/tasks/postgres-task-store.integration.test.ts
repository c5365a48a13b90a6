import { randomUUID } from 'node:crypto';
import { resolveRetention, type TaskStore } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterAll, expect, inject, it, vi } from 'vitest';
import { inSchema, MIGRATIONS, PRUNE_BEYOND } from '../../packages/tasks/src/task-sql.js';
import { cancelRunningConformance } from '../../packages/tasks/test/cancel-running.conformance.js';
import { claimLookingAheadConformance } from '../../packages/tasks/test/claim-looking-ahead.conformance.js';
import { retentionStoreConformance } from '../../packages/tasks/test/retention-store.conformance.js';
import { scheduleStoreConformance } from '../../packages/tasks/test/schedule-store.conformance.js';
import { taskBackoffConformance } from '../../packages/tasks/test/task-backoff.conformance.js';
import { taskStoreConformance } from '../../packages/tasks/test/task-store.conformance.js';
import { taskStoreLimitsConformance } from '../../packages/tasks/test/task-store-limits.conformance.js';
import { uniqueWindowConformance } from '../../packages/tasks/test/unique-window.conformance.js';
import { waitFor } from '../support/wait-for.js';

const url = inject('databaseUrl');
const schemas: string[] = [];

const schemaOf = new WeakMap<object, string>();

async function make() {
  const schema = `sf_c${randomUUID().slice(0, 8)}`;
  schemas.push(schema);
  const store = new PostgresTaskStore({ url, schema });
  schemaOf.set(store, schema);
  await store.migrate();
  return store;
}
// Another node: a store of its own on the same schema.
const peer = async (store: TaskStore) => new PostgresTaskStore({ url, schema: schemaOf.get(store) as string });

taskStoreConformance('PostgreSQL', make, peer);
taskStoreLimitsConformance('PostgreSQL', make, peer, { groups: true });
retentionStoreConformance('PostgreSQL', make);
scheduleStoreConformance('PostgreSQL', make, peer);
uniqueWindowConformance('PostgreSQL', make);
cancelRunningConformance('PostgreSQL', make);
claimLookingAheadConformance('PostgreSQL', make);
taskBackoffConformance('PostgreSQL', make);

afterAll(async () => {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
});

/** Rejects when `promise` takes longer than `ms`: what "never waits" means here. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} waited over ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

it('a prune batch in progress holds up neither a claim nor another agent’s prune (PostgreSQL)', async () => {
  const store = await make();
  const schema = schemaOf.get(store) as string;
  const client = await store.pool.connect();
  try {
    await store.enqueue([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
    for (const t of await store.claim('default', 3, 'me', 10_000))
      await store.complete([{ id: t.id, attempt: t.attempt, claimant: t.claimant, status: 'success' }]);
    await store.enqueue([{ name: 'next' }]);
    // One agent's batch, deleting the two newest successes, not yet committed.
    await client.query('BEGIN');
    const [batch] = (await client.query(inSchema(PRUNE_BEYOND, schema), ['success', 0, 2])).rows as { count: number }[];
    expect(batch?.count).toBe(2);
    const claimed = await within(store.claim('default', 10, 'me', 10_000), 2000, 'a claim');
    expect(claimed.map((t) => t.name)).toEqual(['next']);
    const policy = resolveRetention({ success: { maxCount: 0 }, error: false, timeout: false, cancelled: false });
    // Another agent's batch skips the rows the first one holds.
    expect(await within(store.pruneFinished(policy, 10), 2000, 'a second prune')).toEqual([{ states: ['success'], count: 1 }]);
    await client.query('COMMIT');
    expect(await store.countWhere({ state: 'success' })).toBe(0);
  } finally {
    await client.query('ROLLBACK').catch(() => {});
    client.release();
    await store.close();
  }
});

async function withAdmin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

/** `n` finished tasks written straight into the table, as a store that ran for a long time keeps them. */
const finishedRows = (schema: string, n: number, state = 'success', queue = 'default') =>
  `INSERT INTO ${schema}.tasks (queue, name, state, attempt, finished_at)
    SELECT '${queue}', 'done', '${state}', 1, now() FROM generate_series(1, ${n})`;

it('counts() reads no finished row: every statement it runs plans no sequential scan of the tasks (PostgreSQL)', async () => {
  const store = await make();
  const schema = schemaOf.get(store) as string;
  try {
    await store.enqueue([{ name: 'w' }, { name: 'r' }, { name: 'o', options: { queue: 'other' } }]);
    await store.claim('default', 1, 'me', 60_000);
    await withAdmin(async (admin) => {
      await admin.query(finishedRows(schema, 50_000));
      await admin.query(`ANALYZE ${schema}.tasks`);
      const spy = vi.spyOn(store.pool, 'query');
      const counts = await store.counts();
      const statements = spy.mock.calls.map(([config]) => config as unknown as { text: string; values?: unknown[] });
      spy.mockRestore();
      expect(counts.filter((c) => c.state !== 'success')).toEqual([
        { queue: 'default', state: 'running', count: 1 },
        { queue: 'default', state: 'waiting', count: 1 },
        { queue: 'other', state: 'waiting', count: 1 },
      ]);
      expect(statements.length).toBeGreaterThan(0);
      for (const { text, values } of statements) {
        const plan = (await admin.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${text}`, values)).rows.map((r) => r['QUERY PLAN']).join('\n');
        expect(plan).not.toMatch(/Seq Scan on tasks/);
        expect(plan).toMatch(/Index (Only )?Scan using tasks_claim/);
        expect(plan).toMatch(/Index (Only )?Scan using tasks_running/);
      }
    });
  } finally {
    await store.close();
  }
});

it('the counters start from the tasks a table already holds when the store is upgraded, follow a success inside a handler’s transaction, and fold the rows of ended connections (PostgreSQL)', async () => {
  const store = await make();
  const schema = schemaOf.get(store) as string;
  try {
    // A table from before the counters: their migration and the later one undone, then tasks that finished meanwhile.
    const counters = MIGRATIONS.findIndex((m) => m.includes('CREATE TABLE $schema.task_counts')) + 1;
    expect(MIGRATIONS.length).toBe(counters + 1);
    await withAdmin(async (admin) => {
      await admin.query(`DROP TABLE ${schema}.task_counts, ${schema}.event_followers`);
      await admin.query(`DELETE FROM ${schema}.migrations WHERE version >= ${counters}`);
      await admin.query(finishedRows(schema, 30));
      await admin.query(finishedRows(schema, 4, 'timeout', 'other'));
    });
    await store.migrate();
    await store.enqueue([{ name: 'w' }]);
    expect(await store.counts()).toEqual([
      { queue: 'default', state: 'success', count: 30 },
      { queue: 'default', state: 'waiting', count: 1 },
      { queue: 'other', state: 'timeout', count: 4 },
    ]);
    const [task] = await store.claim('default', 1, 'me', 60_000);
    const client = await store.pool.connect();
    try {
      await client.query('BEGIN');
      const query = async <R>(text: string, params?: readonly unknown[]) => (await client.query(text, params as unknown[])).rows as R[];
      expect(await store.succeedWith(query, { id: task?.id as string, attempt: 1, claimant: task?.claimant as string })).toBe(true);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    expect(await store.counts()).toEqual([
      { queue: 'default', state: 'success', count: 31 },
      { queue: 'other', state: 'timeout', count: 4 },
    ]);
    // Another agent's outcomes land on its connections' own rows; once it has gone, a retention pass folds them.
    const other = await peer(store);
    await other.enqueue([{ name: 'e', options: { maxAttempts: 1 } }]);
    const [failing] = await other.claim('default', 1, 'other', 60_000);
    await other.complete([{ id: failing?.id as string, attempt: 1, claimant: failing?.claimant as string, status: 'error', error: 'no' }]);
    await other.close();
    const keepAll = resolveRetention({ success: false, error: false, timeout: false, cancelled: false });
    const rowsOfGone = `SELECT count(*)::integer AS n FROM ${schema}.task_counts c
      WHERE slot <> 0 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.slot)`;
    await waitFor(async () => {
      await store.pruneFinished(keepAll, 100);
      return (await withAdmin((admin) => admin.query<{ n: number }>(rowsOfGone))).rows[0]?.n === 0;
    }, 'the ended connections’ counter rows to be folded');
    expect(await store.counts()).toEqual([
      { queue: 'default', state: 'error', count: 1 },
      { queue: 'default', state: 'success', count: 31 },
      { queue: 'other', state: 'timeout', count: 4 },
    ]);
  } finally {
    await store.close();
  }
});
