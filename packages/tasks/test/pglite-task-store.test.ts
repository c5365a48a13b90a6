import { PGliteTaskStore } from '../src/pglite-task-store.js';
import { taskStoreConformance } from './task-store.conformance.js';

taskStoreConformance('embedded PGlite', async () => {
  const store = new PGliteTaskStore();
  await store.migrate();
  return store;
});
