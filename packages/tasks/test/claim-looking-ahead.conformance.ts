import { StageSystem } from '@stagefabric/runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { type ClaimBatch, startTaskPipeline, TaskRegistry, type TaskStore } from '../src/index.js';

type LookingAhead = TaskStore & { claimLookingAhead(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimBatch> };

/** A store's claimLookingAhead (the SQL stores'); `make` returns a fresh, migrated, empty store. */
export function claimLookingAheadConformance(name: string, make: () => Promise<LookingAhead>): void {
  describe(`a claim that looks ahead: ${name}`, () => {
    const stores: TaskStore[] = [];
    const systems: StageSystem[] = [];
    afterEach(async () => {
      for (const s of systems.splice(0)) await s.shutdown();
      for (const s of stores.splice(0)) await s.close();
    });
    const fresh = async () => {
      const store = await make();
      stores.push(store);
      return store;
    };

    it('a short claim says when the earliest task left waiting falls due, as nextRunAt would; a full one does not look', async () => {
      const store = await fresh();
      expect(await store.claimLookingAhead('default', 5, 'me', 10_000)).toEqual({ tasks: [], nextRunAt: null });
      const due = await store.enqueue([{ name: 'now-1' }, { name: 'now-2' }]);
      const [later] = await store.enqueue([{ name: 'later', options: { delayMs: 60_000 } }]);
      await store.enqueue([{ name: 'latest', options: { delayMs: 120_000 } }]);
      const laterAt = (await store.get(later?.id as string))?.runAt.getTime();

      const short = await store.claimLookingAhead('default', 5, 'me', 10_000);
      expect(short.tasks.map((t) => t.id)).toEqual(due.map((r) => r.id));
      // The claimed tasks are not counted as still waiting.
      expect(short.nextRunAt?.getTime()).toBe(laterAt);
      expect((await store.nextRunAt('default'))?.getTime()).toBe(laterAt);

      await store.enqueue([{ name: 'now-3' }, { name: 'now-4' }]);
      const full = await store.claimLookingAhead('default', 2, 'me', 10_000);
      expect(full.tasks).toHaveLength(2);
      expect(full.nextRunAt).toBeUndefined();
      expect((await store.claim('default', 5, 'me', 10_000)).length).toBe(0);
    });

    it('a paused queue gives no task and no wake-up time; a limited one is claimed under its limits and leaves the look to nextRunAt', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'a' }, { name: 'b' }, { name: 'c' }]);
      await store.pause('default');
      expect(await store.claimLookingAhead('default', 5, 'me', 10_000)).toEqual({ tasks: [], nextRunAt: null });
      await store.resume('default');
      await store.setLimits('default', { concurrency: 2 });
      const limited = await store.claimLookingAhead('default', 5, 'me', 10_000);
      expect(limited.tasks).toHaveLength(2);
      expect(limited.nextRunAt).toBeUndefined();
    });

    it('a producer wakes for a delayed task from its short claim alone: it runs at its time under a one-minute poll, nextRunAt never asked', async () => {
      const store = await fresh();
      let asked = 0;
      const nextRunAt = store.nextRunAt.bind(store);
      store.nextRunAt = (queue: string) => {
        asked++;
        return nextRunAt(queue);
      };
      const ranAt: number[] = [];
      const system = new StageSystem();
      systems.push(system);
      await startTaskPipeline(system, {
        store,
        registry: new TaskRegistry().register('later', () => void ranAt.push(Date.now())),
        owner: 'node-1',
        pollIntervalMs: 60_000,
      });
      const [r] = await store.enqueue([{ name: 'later', options: { delayMs: 300 } }]);
      const runAt = (await store.get(r?.id as string))?.runAt.getTime() as number;
      await waitFor(() => ranAt.length === 1, 'the delayed task to run', 10_000);
      expect(ranAt[0]).toBeGreaterThanOrEqual(runAt);
      expect(asked).toBe(0);
    });
  });
}
