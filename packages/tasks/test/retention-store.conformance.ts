import { FabricError } from '@stagefabric/runtime';
import { describe, expect, it } from 'vitest';
import { type PruneCount, resolveRetention, startTaskRetention, type TaskStore } from '../src/index.js';
import { suiteStores } from './suite-stores.js';

const KEEP_ALL = { success: false, error: false, timeout: false, cancelled: false } as const;

/** Finished tasks: `n` successes and `failures` failed for good, plus one left waiting; returns the ids of the successes, oldest first. */
async function finished(store: TaskStore, n: number, failures = 0): Promise<string[]> {
  await store.enqueue(Array.from({ length: n + failures }, (_, i) => ({ name: i < n ? 'ok' : 'bad', options: { maxAttempts: 1 } })));
  const ids: string[] = [];
  // One at a time, each in a later millisecond than the last (stores keep finish times to the millisecond), so their finish times are in order.
  for (let i = 0; i < n + failures; i++) {
    const last = Date.now();
    while (Date.now() === last) await Promise.resolve();
    const [task] = await store.claim('default', 1, 'me', 10_000);
    if (task === undefined) throw new Error('nothing claimed');
    const claim = { id: task.id, attempt: task.attempt, claimant: task.claimant };
    if (task.name === 'ok') {
      await store.complete([{ ...claim, status: 'success' }]);
      ids.push(task.id);
    } else await store.complete([{ ...claim, status: 'error', error: 'no' }]);
  }
  await store.enqueue([{ name: 'still-waiting' }]);
  return ids;
}

const total = (counts: PruneCount[]) => counts.reduce((n, c) => n + c.count, 0);

/** Retention as every task store does it; `make` returns a fresh, migrated, empty store. */
export function retentionStoreConformance(name: string, make: () => Promise<TaskStore>): void {
  describe(`retention conformance: ${name}`, () => {
    const { fresh } = suiteStores(make);

    it('keeps the newest maxCount of a state, deleting the rest with their attempts, in batches; never a waiting task', async () => {
      const store = await fresh();
      const ids = await finished(store, 5);
      const policy = resolveRetention({ ...KEEP_ALL, success: { maxCount: 1 } });
      expect(await store.pruneFinished(policy, 3)).toEqual([{ states: ['success'], count: 3 }]);
      expect(await store.pruneFinished(policy, 3)).toEqual([{ states: ['success'], count: 1 }]);
      expect(await store.pruneFinished(policy, 3)).toEqual([]);
      expect((await store.list({ state: 'success' })).map((t) => t.id)).toEqual([ids[4]]);
      expect(await store.get(ids[0] as string)).toBeNull();
      expect(await store.attempts(ids[0] as string)).toEqual([]);
      expect(await store.countWhere({ state: 'waiting' })).toBe(1);
    });

    it('deletes what finished longer ago than maxAgeMs, each state by its own rule, and keeps a state whose rule is false', async () => {
      const store = await fresh();
      await finished(store, 3, 2);
      expect(await store.pruneFinished(resolveRetention({ ...KEEP_ALL, success: { maxAgeMs: 60_000 } }), 100)).toEqual([]);
      expect(await store.countWhere({ state: 'success' })).toBe(3);
      const failedRule = { maxAgeMs: 0 };
      const counts = await store.pruneFinished(
        resolveRetention({ success: false, error: failedRule, timeout: failedRule, cancelled: failedRule }),
        100,
      );
      expect(total(counts)).toBe(2);
      expect(counts.every((c) => c.states.includes('error'))).toBe(true);
      expect(await store.countWhere({ state: 'error' })).toBe(0);
      expect(await store.countWhere({ state: 'success' })).toBe(3);
      expect(await store.countWhere({ state: 'waiting' })).toBe(1);
    });

    it('the retention loop prunes in batches until nothing is left, reporting each batch; a bad policy is refused naming the field', async () => {
      const store = await fresh();
      await finished(store, 7);
      const reported: PruneCount[] = [];
      const retention = startTaskRetention({
        store,
        policy: { success: { maxCount: 2 } },
        batchSize: 2,
        // One pass at start, the next an hour later: the test's pass is the one it asks for.
        intervalMs: 3_600_000,
        onPruned: (p) => reported.push(p),
        onError: (error) => {
          throw error;
        },
      });
      await retention.prune();
      await retention.stop();
      expect(total(reported)).toBe(5);
      expect(reported.every((p) => p.count <= 2)).toBe(true);
      expect(await store.countWhere({ state: 'success' })).toBe(2);
      for (const [policy, message] of [
        [{ success: { maxAgeMs: -1 } }, /retention success.maxAgeMs = -1: must be a non-negative integer/],
        [{ success: {} }, /retention success = .*give maxAgeMs, maxCount or both/],
        [{ waiting: { maxCount: 1 } }, /retention waiting = .*is not a finished state/],
        [{ error: { maxCount: 1.5 } }, /retention error.maxCount = 1.5/],
      ] as const) {
        let error: unknown;
        try {
          resolveRetention(policy as never);
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(FabricError);
        expect((error as FabricError).code).toBe('SF_BAD_OPTION');
        expect((error as FabricError).message).toMatch(message);
      }
    });
  });
}
