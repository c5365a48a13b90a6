import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, inject } from 'vitest';
import { PostgresTaskStore } from '../../packages/node-agent/src/index.js';
import { taskStoreConformance } from '../../packages/node-agent/test/tasks/task-store.conformance.js';

const url = inject('databaseUrl');
const schemas: string[] = [];

taskStoreConformance('PostgreSQL', async () => {
  const schema = `sf_c${randomUUID().slice(0, 8)}`;
  schemas.push(schema);
  const store = new PostgresTaskStore({ url, schema });
  await store.migrate();
  return store;
});

afterAll(async () => {
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
});
