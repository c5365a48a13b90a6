import { PGliteTaskStore } from '../src/pglite-task-store.js';
import { typedTaskSuite } from './typed-tasks.suite.js';

typedTaskSuite('embedded PGlite', async () => {
  const store = new PGliteTaskStore();
  await store.migrate();
  return store;
});
