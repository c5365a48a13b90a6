import { randomUUID } from 'node:crypto';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterAll, inject } from 'vitest';
import { typedTaskSuite } from '../../packages/tasks/test/typed-tasks.suite.js';

const url = inject('databaseUrl');
const schemas: string[] = [];

typedTaskSuite('PostgreSQL', async () => {
  const schema = `sf_t${randomUUID().slice(0, 8)}`;
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
