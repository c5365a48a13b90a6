import { describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import type { ClaimedTask, TaskStore } from '../src/index.js';
import { suiteStores } from './suite-stores.js';

const success = (t: ClaimedTask) => ({ id: t.id, attempt: t.attempt, claimant: t.claimant, status: 'success' as const });

/**
 * Queue limits as every store keeps them; `groups` says whether the store
 * keeps per-group limits (BullMQ does not, and refuses them).
 */
export function taskStoreLimitsConformance(
  name: string,
  make: () => Promise<TaskStore>,
  peer: (store: TaskStore) => Promise<TaskStore>,
  { groups }: { readonly groups: boolean },
): void {
  describe(`task store limits: ${name}`, () => {
    const { fresh, peerOf } = suiteStores(make, peer);

    it('queue concurrency: claims from two nodes at once never hold more than the limit; an outcome makes room', async () => {
      const store = await fresh();
      const other = await peerOf(store);
      await store.enqueue(Array.from({ length: 20 }, (_, n) => ({ name: 't', args: n })));
      // Claimed before the limit was set: it counts once the queue is limited, and the claim of a queue not limited before sees the limit.
      const before = await store.claim('default', 1, 'a', 10_000);
      expect(await other.claim('default', 1, 'b', 10_000)).toHaveLength(1);
      await store.setLimits('default', { concurrency: 4 });
      const [a, b, c] = await Promise.all([
        store.claim('default', 10, 'a', 10_000),
        other.claim('default', 10, 'b', 10_000),
        other.claim('default', 10, 'c', 10_000),
      ]);
      const held = [...before, ...(a ?? []), ...(b ?? []), ...(c ?? [])];
      expect(held).toHaveLength(3);
      expect(await store.claim('default', 10, 'a', 10_000)).toEqual([]);
      expect(await other.complete([success(held[0] as ClaimedTask)])).toEqual([held[0]?.id]);
      expect(await store.claim('default', 10, 'a', 10_000)).toHaveLength(1);
      expect(await other.claim('default', 10, 'b', 10_000)).toEqual([]);
      // Lifted: the rest at once.
      await store.setLimits('default', null);
      expect(await store.limits('default')).toBeNull();
      expect(await other.claim('default', 100, 'b', 10_000)).toHaveLength(15);
    });

    it('queue rate: at most max starts per interval, more once the window has passed; nextRunAt says when', async () => {
      const store = await fresh();
      await store.setLimits('default', { rate: { max: 2, intervalMs: 1500 } });
      await store.enqueue(Array.from({ length: 6 }, (_, n) => ({ name: 't', args: n })));
      const first = await store.claim('default', 10, 'a', 10_000);
      const at = Date.now();
      expect(first.map((t) => t.args)).toEqual([0, 1]);
      // Outcomes do not give back starts.
      await store.complete(first.map(success));
      expect(await store.claim('default', 10, 'a', 10_000)).toEqual([]);
      const next = await store.nextRunAt('default');
      expect(next).not.toBeNull();
      expect(next?.getTime()).toBeGreaterThan(at + 1000);
      expect(next?.getTime()).toBeLessThan(at + 2000);
      let second: ClaimedTask[] = [];
      await waitFor(
        async () => {
          second = await store.claim('default', 10, 'a', 10_000);
          return second.length > 0;
        },
        'the rate window to pass',
        5000,
      );
      expect(Date.now() - at).toBeGreaterThanOrEqual(1400);
      expect(second.map((t) => t.args)).toEqual([2, 3]);
    });

    it('a paused limited queue gives nothing; limits are read back as set; bad limits are refused naming the queue and the rule', async () => {
      const store = await fresh();
      await store.setLimits('q', { concurrency: 2, rate: { max: 10, intervalMs: 1000 } });
      expect(await store.limits('q')).toEqual({ concurrency: 2, rate: { max: 10, intervalMs: 1000 } });
      expect(await store.limits('other')).toBeNull();
      await store.enqueue([{ name: 't', options: { queue: 'q' } }]);
      await store.pause('q');
      expect(await store.claim('q', 10, 'a', 10_000)).toEqual([]);
      await store.resume('q');
      expect(await store.claim('q', 10, 'a', 10_000)).toHaveLength(1);
      await expect(store.setLimits('q', { concurrency: 0 })).rejects.toMatchObject({
        code: 'SF_BAD_OPTION',
        message: expect.stringMatching(/queue q: concurrency = 0: must be an integer from 1/),
      });
      await expect(store.setLimits('q', { rate: { max: 5 } } as never)).rejects.toThrow(/rate\.intervalMs = undefined/);
      await expect(store.setLimits('q', { concurency: 2 } as never)).rejects.toThrow(/concurency = 2: is not a limit/);
      expect(await store.limits('q')).toEqual({ concurrency: 2, rate: { max: 10, intervalMs: 1000 } });
    });

    if (!groups) {
      it('refuses per-group limits and grouped tasks with SF_UNSUPPORTED, naming the store', async () => {
        const store = await fresh();
        await expect(store.setLimits('default', { group: { concurrency: 1 } })).rejects.toMatchObject({
          code: 'SF_UNSUPPORTED',
          message: expect.stringMatching(/BullMQ task store cannot limit or order per group/),
        });
        await expect(store.enqueue([{ name: 't', options: { group: 'c1' } }])).rejects.toMatchObject({ code: 'SF_UNSUPPORTED' });
        expect(await store.limits('default')).toBeNull();
      });
      return;
    }

    it('per-group concurrency: a group at its limit holds back only its own tasks, each group in order; tasks without a group go on', async () => {
      const store = await fresh();
      const other = await peerOf(store);
      await store.setLimits('default', { group: { concurrency: 1 } });
      await store.enqueue([
        { name: 'a1', options: { group: 'a' } },
        { name: 'a2', options: { group: 'a' } },
        { name: 'b1', options: { group: 'b' } },
        { name: 'a3', options: { group: 'a' } },
        { name: 'free1' },
        { name: 'b2', options: { group: 'b' } },
        { name: 'free2' },
      ]);
      const [x, y] = await Promise.all([store.claim('default', 10, 'a', 10_000), other.claim('default', 10, 'b', 10_000)]);
      const held = [...(x ?? []), ...(y ?? [])];
      expect(held.map((t) => t.name).sort()).toEqual(['a1', 'b1', 'free1', 'free2']);
      expect(await store.claim('default', 10, 'a', 10_000)).toEqual([]);
      await store.complete(held.filter((t) => t.name === 'a1').map(success));
      expect((await other.claim('default', 10, 'b', 10_000)).map((t) => t.name)).toEqual(['a2']);
    });

    it('ordered groups: one task of a group at a time, in enqueue order (priority too waits), a retry holding its group back', async () => {
      const store = await fresh();
      await store.setLimits('default', { group: { ordered: true } });
      expect(await store.limits('default')).toEqual({ group: { ordered: true } });
      await store.enqueue([
        { name: 'a1', options: { group: 'a' } },
        { name: 'a2', options: { group: 'a', priority: -5 } },
        { name: 'b1', options: { group: 'b' } },
        { name: 'a3', options: { group: 'a' } },
        { name: 'b2', options: { group: 'b' } },
        { name: 'free' },
      ]);
      const names = async () => (await store.claim('default', 10, 'me', 10_000)).map((t) => t.name).sort();
      const first = await store.claim('default', 10, 'me', 10_000);
      expect(first.map((t) => t.name).sort()).toEqual(['a1', 'b1', 'free']);
      expect(await names()).toEqual([]);
      const a1 = first.find((t) => t.name === 'a1') as ClaimedTask;
      const b1 = first.find((t) => t.name === 'b1') as ClaimedTask;
      // a1 fails and waits for its retry: a2 still waits behind it.
      await store.complete([{ id: a1.id, attempt: a1.attempt, claimant: a1.claimant, status: 'error', error: 'x', retryAt: new Date() }]);
      const retried = await store.claim('default', 10, 'me', 10_000);
      expect(retried.map((t) => [t.name, t.attempt])).toEqual([['a1', 2]]);
      await store.complete([success(retried[0] as ClaimedTask), success(b1)]);
      const second = await store.claim('default', 10, 'me', 10_000);
      expect(second.map((t) => t.name)).toEqual(['a2', 'b2']);
      await store.complete(second.map(success));
      expect(await names()).toEqual(['a3']);
      await expect(store.setLimits('default', { group: { ordered: true, concurrency: 2 } })).rejects.toThrow(
        /group\.concurrency = 2: must be 1 or left out with group\.ordered/,
      );
    });

    it('per-group rate and queue concurrency together: each bound holds', async () => {
      const store = await fresh();
      await store.setLimits('default', { concurrency: 3, group: { rate: { max: 1, intervalMs: 60_000 } } });
      expect(await store.limits('default')).toEqual({ concurrency: 3, group: { rate: { max: 1, intervalMs: 60_000 } } });
      await store.enqueue(['a', 'a', 'b', 'b', 'c', 'd'].map((g, n) => ({ name: `${g}${n}`, options: { group: g } })));
      const first = await store.claim('default', 10, 'a', 10_000);
      expect(first.map((t) => t.name)).toEqual(['a0', 'b2', 'c4']);
      await store.complete(first.map(success));
      // Room for three again, but a, b and c have had their start of the minute.
      expect((await store.claim('default', 10, 'a', 10_000)).map((t) => t.name)).toEqual(['d5']);
      expect(await store.claim('default', 10, 'a', 10_000)).toEqual([]);
    });
  });
}
