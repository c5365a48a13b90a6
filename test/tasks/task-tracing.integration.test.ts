import { randomUUID } from 'node:crypto';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterAll, inject } from 'vitest';
import { taskTracingSuite } from '../../packages/tasks/test/task-tracing.suite.js';

const databaseUrl = inject('databaseUrl');
const redisUrl = inject('redisUrl');
const schemas: string[] = [];

taskTracingSuite('PostgreSQL', async () => {
  const schema = `sf_tr${randomUUID().slice(0, 8)}`;
  schemas.push(schema);
  const store = new PostgresTaskStore({ url: databaseUrl, schema });
  await store.migrate();
  return store;
});

taskTracingSuite('Redis through BullMQ', async () => {
  const store = new BullMQTaskStore({ url: redisUrl, prefix: `sftr${randomUUID().slice(0, 8)}` });
  await store.migrate();
  return store;
});

afterAll(async () => {
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  for (const schema of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
});
