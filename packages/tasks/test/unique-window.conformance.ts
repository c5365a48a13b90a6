import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import type { TaskStore } from '../src/index.js';

/** uniqueKey held for a window (uniqueForMs), as every task store keeps it; `make` returns a fresh, migrated, empty store. */
export function uniqueWindowConformance(name: string, make: () => Promise<TaskStore>): void {
  describe(`unique key windows: ${name}`, () => {
    const stores: TaskStore[] = [];
    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close();
    });

    it('a key held for uniqueForMs refuses a duplicate until the window ends, even once its task finished', async () => {
      const store = await make();
      stores.push(store);
      const started = Date.now();
      const [first, again] = await store.enqueue([
        { name: 'w', options: { uniqueKey: 'report', uniqueForMs: 1500 } },
        { name: 'w', options: { uniqueKey: 'report', uniqueForMs: 1500 } },
      ]);
      expect(first?.duplicate).toBe(false);
      expect(again).toEqual({ id: first?.id, duplicate: true });
      const [task] = await store.claim('default', 1, 'me', 10_000);
      expect(task?.id).toBe(first?.id);
      await store.complete([{ id: task?.id as string, attempt: 1, claimant: task?.claimant as string, status: 'success' }]);
      // Finished, yet still held.
      expect(await store.enqueue([{ name: 'w', options: { uniqueKey: 'report', uniqueForMs: 1500 } }])).toEqual([
        { id: first?.id, duplicate: true },
      ]);
      let next: string | undefined;
      await waitFor(async () => {
        const [r] = await store.enqueue([{ name: 'w', options: { uniqueKey: 'report', uniqueForMs: 1500 } }]);
        if (r?.duplicate === false) next = r.id;
        return next !== undefined;
      }, 'the window to end');
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
      expect(next).not.toBe(first?.id);
      expect(await store.countWhere({ name: 'w' })).toBe(2);
    });

    it('uniqueForMs without a uniqueKey, or not a positive integer, is refused naming the option', async () => {
      const store = await make();
      stores.push(store);
      await expect(store.enqueue([{ name: 'w', options: { uniqueForMs: 1000 } }])).rejects.toMatchObject({
        code: 'SF_BAD_TASK',
        message: expect.stringMatching(/task 0 \(w\): option uniqueForMs = 1000: needs a uniqueKey/),
      });
      await expect(store.enqueue([{ name: 'w', options: { uniqueKey: 'k', uniqueForMs: -1 } }])).rejects.toMatchObject({
        message: expect.stringMatching(/option uniqueForMs = -1: must be a positive integer/),
      });
      expect(await store.countWhere({})).toBe(0);
    });
  });
}
