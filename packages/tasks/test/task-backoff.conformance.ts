import { FakeClock, StageSystem } from '@stagefabric/runtime';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { startTaskPipeline, TaskRegistry, type TaskStore } from '../src/index.js';
import { suiteStores } from './suite-stores.js';

const MINUTE = 60_000;

/**
 * A task's own backoff (enqueue option `backoff`): kept with the task, it
 * decides the wait after a failed attempt instead of its handler's; a bad
 * one is refused at enqueue, naming the field.
 */
export function taskBackoffConformance(name: string, make: () => Promise<TaskStore>) {
  describe(`a task's own backoff (${name})`, { timeout: 90_000 }, () => {
    const { fresh } = suiteStores(make);

    it('is kept with the task and comes with its claim, in its stored form', async () => {
      const store = await fresh();
      const [own] = await store.enqueue([
        { name: 'own', options: { queue: 'bo', priority: 1, backoff: { type: 'fixed', delayMs: 1500 } } },
        { name: 'exp', options: { queue: 'bo', priority: 2, backoff: { type: 'exponential', maxMs: 9000 } } },
        { name: 'none', options: { queue: 'bo', priority: 3 } },
      ]);
      const claimed = await store.claim('bo', 3, 'node-a', 30_000);
      expect(claimed.map((t) => [t.name, t.backoff])).toEqual([
        ['own', { type: 'fixed', delayMs: 1500 }],
        ['exp', { type: 'exponential', maxMs: 9000 }],
        ['none', undefined],
      ]);
      // An operator sees it too.
      expect((await store.get(own?.id as string))?.backoff).toEqual({ type: 'fixed', delayMs: 1500 });
    });

    it("a failed attempt waits the task's own backoff, not its handler's (the runner on the stage clock)", async () => {
      const store = await fresh();
      const registry = new TaskRegistry().register(
        'flaky',
        () => {
          throw new Error('upstream down');
        },
        { backoff: { type: 'fixed', delayMs: 60 * MINUTE } },
      );
      // The runner's time is this clock's: it moves only when the test moves it, so the wait it set is read back exactly.
      const clock = new FakeClock(Date.now());
      const system = new StageSystem({ clock });
      const tick = (condition: () => Promise<boolean>, what: string) =>
        waitFor(async () => {
          clock.advance(1);
          return condition();
        }, what);
      try {
        await startTaskPipeline(system, {
          store,
          registry,
          owner: 'node-1',
          queue: 'bo',
          pollIntervalMs: 50,
          backoff: { baseMs: 20, maxMs: 50 },
        });
        const [own] = await store.enqueue([
          { name: 'flaky', options: { queue: 'bo', maxAttempts: 3, backoff: { type: 'fixed', delayMs: 10 * MINUTE } } },
        ]);
        await tick(async () => (await store.get(own?.id as string))?.lastError === 'upstream down', 'the first attempt to fail');
        expect((await store.get(own?.id as string))?.state).toBe('waiting');
        const wait = ((await store.nextRunAt('bo'))?.getTime() ?? 0) - clock.now();
        // The clock moved on a little while the test looked: the wait is the task's ten minutes less that, not the handler's hour.
        expect(wait).toBeGreaterThan(10 * MINUTE - 30_000);
        expect(wait).toBeLessThanOrEqual(10 * MINUTE);
        // The task's record says when it runs again, as the store's look for the next task does.
        const retryAt = (await store.nextRunAt('bo'))?.getTime();
        expect((await store.get(own?.id as string))?.runAt.getTime()).toBe(retryAt);
        expect((await store.list({ queue: 'bo', state: 'waiting' })).map((t) => t.runAt.getTime())).toEqual([retryAt]);
      } finally {
        let stopped = false;
        const stopping = system.shutdown().finally(() => {
          stopped = true;
        });
        await waitFor(() => {
          clock.advance(100);
          return stopped;
        }, 'the pipeline to stop');
        await stopping;
      }
    });

    it('a bad backoff is refused at enqueue, naming the task, the field and the rule; nothing of the batch is stored', async () => {
      const store = await fresh();
      const refused = (backoff: unknown) =>
        store.enqueue([{ name: 'ok' }, { name: 'send', options: { backoff: backoff as never } }]).then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(await refused({ type: 'fixed', delayMs: -1 })).toMatchObject({
        code: 'SF_BAD_TASK',
        message: 'task 1 (send): option backoff.delayMs = -1: must be a number of milliseconds from 0 to 2147483647',
      });
      expect(await refused({ type: 'linear', delayMs: 5 })).toMatchObject({
        code: 'SF_BAD_TASK',
        message: expect.stringMatching(/^task 1 \(send\): option backoff\.type = "linear": must be 'fixed' or 'exponential'$/),
      });
      expect(await refused({ type: 'exponential', base: 100 })).toMatchObject({
        code: 'SF_BAD_TASK',
        message: expect.stringMatching(
          /^task 1 \(send\): option backoff\.base = 100: is not a field of a backoff of type exponential \(type, baseMs, maxMs\)$/,
        ),
      });
      expect(await refused(() => 1000)).toMatchObject({
        code: 'SF_BAD_TASK',
        message: expect.stringMatching(/^task 1 \(send\): option backoff = a function: a task keeps its backoff as data/),
      });
      expect(await store.countWhere({})).toBe(0);
    });
  });
}
