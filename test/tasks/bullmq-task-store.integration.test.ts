import { randomUUID } from 'node:crypto';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { inject } from 'vitest';
import { taskStoreConformance } from '../../packages/tasks/test/task-store.conformance.js';

const url = inject('redisUrl');

// A key prefix per store: each test sees only its own queues.
taskStoreConformance('Redis through BullMQ', async () => {
  const store = new BullMQTaskStore({ url, prefix: `sfbull${randomUUID().slice(0, 8)}` });
  await store.migrate();
  return store;
});
