import { randomUUID } from 'node:crypto';
import { inject } from 'vitest';
import { BullMQTaskStore } from '../../packages/node-agent/src/index.js';
import { taskStoreConformance } from '../../packages/node-agent/test/tasks/task-store.conformance.js';

const url = inject('redisUrl');

// A key prefix per store: each test sees only its own queues.
taskStoreConformance('Redis through BullMQ', async () => {
  const store = new BullMQTaskStore({ url, prefix: `sfbull${randomUUID().slice(0, 8)}` });
  await store.migrate();
  return store;
});
