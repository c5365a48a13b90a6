import { randomUUID } from 'node:crypto';
import { resolveRetention, type TaskStore } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterAll, expect, inject, it } from 'vitest';
import { inSchema, PRUNE_BEYOND } from '../../packages/tasks/src/task-sql.js';
import { cancelRunningConformance } from '../../packages/tasks/test/cancel-running.conformance.js';
import { retentionStoreConformance } from '../../packages/tasks/test/retention-store.conformance.js';
import { scheduleStoreConformance } from '../../packages/tasks/test/schedule-store.conformance.js';
import { taskBackoffConformance } from '../../packages/tasks/test/task-backoff.conformance.js';
import { taskStoreConformance } from '../../packages/tasks/test/task-store.conformance.js';
import { taskStoreLimitsConformance } from '../../packages/tasks/test/task-store-limits.conformance.js';
import { uniqueWindowConformance } from '../../packages/tasks/test/unique-window.conformance.js';

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
