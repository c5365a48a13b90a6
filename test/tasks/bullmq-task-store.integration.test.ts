import { randomUUID } from 'node:crypto';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { inject } from 'vitest';
import { taskStoreConformance } from '../../packages/tasks/test/task-store.conformance.js';
import { taskStoreLimitsConformance } from '../../packages/tasks/test/task-store-limits.conformance.js';

const url = inject('redisUrl');

const prefixOf = new WeakMap<object, string>();

const makeStore = async () => {
  const prefix = `sfbull${randomUUID().slice(0, 8)}`;
  const store = new BullMQTaskStore({ url, prefix });
  prefixOf.set(store, prefix);
  await store.migrate();
  return store;
};
// Another node: a store of its own on the same queues, sharing nothing in memory.
const peerStore = async (store: object) => new BullMQTaskStore({ url, prefix: prefixOf.get(store) as string });

// A key prefix per store: each test sees only its own queues.
taskStoreConformance('Redis through BullMQ', makeStore, peerStore);
taskStoreLimitsConformance('Redis through BullMQ', makeStore, peerStore, { groups: false });
