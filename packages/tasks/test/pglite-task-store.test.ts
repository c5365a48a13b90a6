import { PGliteTaskStore } from '../src/pglite-task-store.js';
import { taskStoreConformance } from './task-store.conformance.js';

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
