// Durable tasks in a plain Node app: no topology file, no agent, no Redis.
// Installs @stagefabric/tasks and pg only (the store's driver is an optional
// peer: the PGlite and BullMQ stores' drivers are never installed or loaded).
//
//   DATABASE_URL=postgres://localhost/app node app.mjs
import { setTimeout as sleep } from 'node:timers/promises';
import { startTaskWorker } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';

const url = process.env.DATABASE_URL;
if (!url) {
  console.error('set DATABASE_URL to a PostgreSQL database');
  process.exit(2);
}
const total = Number(process.env.TASKS ?? 200);
const store = new PostgresTaskStore({ url, schema: process.env.TASKS_SCHEMA ?? 'stagefabric' });
await store.migrate();

const thumbnails = new Set();
// Runs up to 10 tasks at once; claims only what it has room for.
const worker = await startTaskWorker({
  store,
  concurrency: 10,
  maxDemand: 20,
  handlers: {
    async thumbnail({ image }, { signal }) {
      await sleep(2, undefined, { signal }); // a real handler would resize `image` here, stopping when signal aborts
      thumbnails.add(image);
    },
  },
});

// From anywhere in the app (a request handler, a script): enqueue, and a worker runs it once.
const started = Date.now();
await store.enqueue(Array.from({ length: total }, (_, i) => ({ name: 'thumbnail', args: { image: `photo-${i}.jpg` } })));
for (;;) {
  const succeeded = (await store.counts()).filter((c) => c.state === 'success').reduce((n, c) => n + c.count, 0);
  if (succeeded >= total) break;
  await sleep(50);
}
await worker.stop();
await store.close();
console.log(`${total} tasks succeeded in ${Date.now() - started} ms; ${thumbnails.size} thumbnails made`);
