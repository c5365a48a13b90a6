import { expect, it } from 'vitest';
import type { TaskStore } from '../src/index.js';
import { PGliteTaskStore } from '../src/pglite-task-store.js';
import { cancelRunningConformance } from './cancel-running.conformance.js';
import { claimLookingAheadConformance } from './claim-looking-ahead.conformance.js';
import { retentionStoreConformance } from './retention-store.conformance.js';
import { scheduleStoreConformance } from './schedule-store.conformance.js';
import { taskBackoffConformance } from './task-backoff.conformance.js';
import { eventsWhenFollowedConformance, taskEventsConformance } from './task-events.conformance.js';
import { taskStoreConformance } from './task-store.conformance.js';
import { taskStoreLimitsConformance } from './task-store-limits.conformance.js';
import { uniqueWindowConformance } from './unique-window.conformance.js';

async function make() {
  const store = new PGliteTaskStore();
  await store.migrate();
  return store;
}
// Embedded: one process holds the database, so another node's view of it is the same instance.
const peer = async (store: TaskStore) => store;

taskStoreConformance('embedded PGlite', make, peer);
retentionStoreConformance('embedded PGlite', make);
scheduleStoreConformance('embedded PGlite', make, peer);
uniqueWindowConformance('embedded PGlite', make);
cancelRunningConformance('embedded PGlite', make);
claimLookingAheadConformance('embedded PGlite', make);
// The default schema's channels, on the store's own embedded database.
eventsWhenFollowedConformance('embedded PGlite', make, async (store, channel, push) =>
  (store as PGliteTaskStore).db.listen(`stagefabric_${channel}`, push),
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

taskEventsConformance('embedded PGlite', make, peer);
taskBackoffConformance('embedded PGlite', make);
