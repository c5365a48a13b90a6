import { expect, it } from 'vitest';
import { PGliteTaskStore } from '../src/pglite-task-store.js';
import { taskStoreConformance } from './task-store.conformance.js';
import { taskStoreLimitsConformance } from './task-store-limits.conformance.js';

// Embedded: one process holds the database, so another node's view of it is the same instance.
taskStoreConformance(
  'embedded PGlite',
  async () => {
    const store = new PGliteTaskStore();
    await store.migrate();
    return store;
  },
  async (store) => store,
);

taskStoreLimitsConformance(
  'embedded PGlite',
  async () => {
    const store = new PGliteTaskStore();
    await store.migrate();
    return store;
  },
  async (store) => store,
  { groups: true },
);

it('lists newest first by id, also past id 9 (the SQL stores)', async () => {
  const store = new PGliteTaskStore();
  await store.migrate();
  try {
    await store.enqueue(Array.from({ length: 12 }, (_, n) => ({ name: 't', args: n })));
    expect((await store.list({ limit: 5 })).map((t) => t.id)).toEqual(['12', '11', '10', '9', '8']);
    expect((await store.list({ limit: 5, offset: 5 })).map((t) => t.id)).toEqual(['7', '6', '5', '4', '3']);
  } finally {
    await store.close();
  }
});
