import { PGliteTaskStore } from '../../src/index.js';
import { taskStoreConformance } from './task-store.conformance.js';

taskStoreConformance('embedded PGlite', async () => {
  const store = new PGliteTaskStore();
  await store.migrate();
  return store;
});
