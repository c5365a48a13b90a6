import { afterEach, describe, expect, it } from 'vitest';
import type { TaskStore } from '../src/index.js';

/** Cancelling a running task, as every task store does it; `make` returns a fresh, migrated, empty store. */
export function cancelRunningConformance(name: string, make: () => Promise<TaskStore>): void {
  describe(`cancel a running task: ${name}`, () => {
    const stores: TaskStore[] = [];
    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close();
    });

    it('a running task is cancelled at once; its run can then neither extend its lease nor record an outcome', async () => {
      const store = await make();
      stores.push(store);
      const [running, waiting] = await store.enqueue([{ name: 'long' }, { name: 'later', options: { delayMs: 60_000 } }]);
      const [task] = await store.claim('default', 1, 'node-a', 10_000);
      expect(task?.id).toBe(running?.id);
      const claim = { id: task?.id as string, attempt: task?.attempt as number, claimant: task?.claimant as string };
      // Only running tasks change: a waiting one is cancel()'s.
      expect(await store.cancelRunning([waiting?.id as string, claim.id, 'no-such-id'])).toEqual([claim.id]);
      expect(await store.get(claim.id)).toMatchObject({ state: 'cancelled', lastError: 'cancelled while running' });
      expect((await store.get(waiting?.id as string))?.state).toBe('waiting');
      // What the node running it sees at its next extension: the claim no longer holds.
      expect(await store.extendLeases([claim], 10_000)).toEqual([]);
      expect(await store.complete([{ ...claim, status: 'success' }])).toEqual([]);
      expect((await store.get(claim.id))?.state).toBe('cancelled');
      expect(await store.cancelRunning([claim.id])).toEqual([]);
      // Retry brings it back like any cancelled task.
      expect(await store.retry([claim.id])).toEqual([claim.id]);
    });
  });
}
