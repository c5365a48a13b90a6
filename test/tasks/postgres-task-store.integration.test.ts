import { randomUUID } from 'node:crypto';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterAll, inject } from 'vitest';
import { taskStoreConformance } from '../../packages/tasks/test/task-store.conformance.js';
import { taskStoreLimitsConformance } from '../../packages/tasks/test/task-store-limits.conformance.js';

const url = inject('databaseUrl');
const schemas: string[] = [];

const schemaOf = new WeakMap<object, string>();

const makeStore = async () => {
  const schema = `sf_c${randomUUID().slice(0, 8)}`;
  schemas.push(schema);
  const store = new PostgresTaskStore({ url, schema });
  schemaOf.set(store, schema);
  await store.migrate();
  return store;
};
// Another node: a store of its own on the same schema.
const peerStore = async (store: object) => new PostgresTaskStore({ url, schema: schemaOf.get(store) as string });

taskStoreConformance('PostgreSQL', makeStore, peerStore);
taskStoreLimitsConformance('PostgreSQL', makeStore, peerStore, { groups: true });

afterAll(async () => {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
});
