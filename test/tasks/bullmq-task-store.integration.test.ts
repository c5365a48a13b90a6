import { randomUUID } from 'node:crypto';
import { resolveRetention, type TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { expect, inject, it } from 'vitest';
import { cancelRunningConformance } from '../../packages/tasks/test/cancel-running.conformance.js';
import { retentionStoreConformance } from '../../packages/tasks/test/retention-store.conformance.js';
import { scheduleStoreConformance } from '../../packages/tasks/test/schedule-store.conformance.js';
import { taskStoreConformance } from '../../packages/tasks/test/task-store.conformance.js';
import { uniqueWindowConformance } from '../../packages/tasks/test/unique-window.conformance.js';

const url = inject('redisUrl');

const prefixOf = new WeakMap<object, string>();

// A key prefix per store: each test sees only its own queues.
async function make() {
  const prefix = `sfbull${randomUUID().slice(0, 8)}`;
  const store = new BullMQTaskStore({ url, prefix });
  prefixOf.set(store, prefix);
  await store.migrate();
  return store;
}
// Another node: a store of its own on the same queues, sharing nothing in memory.
const peer = async (store: TaskStore) => new BullMQTaskStore({ url, prefix: prefixOf.get(store) as string });

taskStoreConformance('Redis through BullMQ', make, peer);
retentionStoreConformance('Redis through BullMQ', make);
scheduleStoreConformance('Redis through BullMQ', make, peer);
uniqueWindowConformance('Redis through BullMQ', make);
cancelRunningConformance('Redis through BullMQ', make);

it('BullMQ refuses retention with different rules for error, timeout and cancelled (one failed set), naming why', async () => {
  const store = new BullMQTaskStore({ url, prefix: `sfbull${randomUUID().slice(0, 8)}` });
  try {
    const policy = resolveRetention({ error: { maxAgeMs: 1000 }, timeout: { maxAgeMs: 2000 } });
    await expect(store.pruneFinished(policy, 10)).rejects.toMatchObject({
      code: 'SF_BAD_OPTION',
      message: expect.stringMatching(/error, timeout and cancelled tasks in one failed set/),
    });
  } finally {
    await store.close();
  }
});
