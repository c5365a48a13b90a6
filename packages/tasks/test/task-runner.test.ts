import { StageSystem } from '@stagefabric/runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { startTaskPipeline, TaskRegistry, type TaskStore } from '../src/index.js';
import { PGliteTaskStore } from '../src/pglite-task-store.js';

const open: { store: TaskStore; system: StageSystem }[] = [];
afterEach(async () => {
  for (const { store, system } of open.splice(0)) {
    await system.shutdown();
    await store.close();
  }
});

async function runner(registry: TaskRegistry, maxDemand = 20, store: PGliteTaskStore = new PGliteTaskStore(), drainMs?: number) {
  await store.migrate();
  const system = new StageSystem();
  open.push({ store, system });
  const pipeline = await startTaskPipeline(system, {
    store,
    registry,
    owner: 'node-1',
    pollIntervalMs: 50,
    maxDemand,
    minDemand: Math.floor(maxDemand / 2),
    backoff: { baseMs: 20, maxMs: 50 },
    ...(drainMs === undefined ? {} : { drainMs }),
  });
  return { store, system, ref: pipeline.runner, stop: pipeline.stop };
}

/** A PGlite store whose claims, while `hold` is set, take effect at once and are answered only once it settles. */
class HeldClaims extends PGliteTaskStore {
  hold: Promise<void> | undefined;
  override async claim(...args: Parameters<PGliteTaskStore['claim']>) {
    const claimed = await super.claim(...args);
    await this.hold;
    return claimed;
  }
}

const state = async (store: TaskStore, state: string) =>
  (await store.counts()).filter((c) => c.state === state).reduce((n, c) => n + c.count, 0);

describe('task producer and runner', () => {
  it('runs every task exactly once and records success', async () => {
    const runs = new Map<number, number>();
    const registry = new TaskRegistry().register('count', (n: number) => void runs.set(n, (runs.get(n) ?? 0) + 1));
    const { store } = await runner(registry);
    await store.enqueue(Array.from({ length: 200 }, (_, n) => ({ name: 'count', args: n })));
    await waitFor(async () => (await state(store, 'success')) === 200, '200 successes');
    expect(runs.size).toBe(200);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(await store.counts()).toEqual([{ queue: 'default', state: 'success', count: 200 }]);
  });

  it('a handler that always throws is retried with backoff, then failed for good, while other tasks flow', async () => {
    const attempts: number[] = [];
    const registry = new TaskRegistry()
      .register('fail', (_a, { task }) => {
        attempts.push(task.attempt);
        throw new Error(`broken on attempt ${task.attempt}`);
      })
      .register('ok', () => undefined);
    const { store } = await runner(registry);
    const [bad] = await store.enqueue([{ name: 'fail', options: { maxAttempts: 3 } }]);
    await store.enqueue(Array.from({ length: 50 }, () => ({ name: 'ok' })));
    await waitFor(
      async () => (await store.get(bad?.id as string))?.state === 'error' && (await state(store, 'success')) === 50,
      'the failure to be final',
    );
    expect(attempts).toEqual([1, 2, 3]);
    expect(await store.get(bad?.id as string)).toMatchObject({ state: 'error', attempt: 3, lastError: 'broken on attempt 3' });
  });

  it('a hanging handler ends as timeout, its signal aborted, and its slot serves the next task', async () => {
    let aborted = false;
    const registry = new TaskRegistry()
      .register('hang', (_a, { signal }) => new Promise(() => signal.addEventListener('abort', () => (aborted = true))))
      .register('ok', () => undefined);
    const { store } = await runner(registry, 1);
    const [hung] = await store.enqueue([{ name: 'hang', options: { timeoutMs: 100, maxAttempts: 1 } }]);
    await store.enqueue([{ name: 'ok' }, { name: 'ok' }]);
    await waitFor(async () => (await state(store, 'success')) === 2, 'the two others to run in the freed slot');
    expect(aborted).toBe(true);
    expect(await store.get(hung?.id as string)).toMatchObject({ state: 'timeout', lastError: 'timed out after 100 ms' });
  });

  it('an unknown handler is an error naming it and the known ones, never a crash', async () => {
    const { store, system, ref } = await runner(new TaskRegistry().register('known', () => undefined));
    const [t] = await store.enqueue([{ name: 'mystery', options: { maxAttempts: 1 } }]);
    await waitFor(async () => (await store.get(t?.id as string))?.state === 'error', 'the error');
    expect((await store.get(t?.id as string))?.lastError).toBe('no handler registered for task "mystery" (registered: known)');
    expect(system.list()).toContain(ref);
  });

  it('stop() hands back what the node still holds: tasks of a claim answered while it stopped go back to waiting', async () => {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const registry = new TaskRegistry().register('gated', () => gate).register('quick', () => undefined);
    const store = new HeldClaims();
    const { stop } = await runner(registry, 10, store);
    await store.enqueue(Array.from({ length: 10 }, () => ({ name: 'gated' })));
    await waitFor(async () => (await state(store, 'running')) === 10, 'ten gated tasks running');
    // The next claim takes its tasks and is not answered until the node is stopping.
    let answer!: () => void;
    store.hold = new Promise((resolve) => (answer = resolve));
    await store.enqueue(Array.from({ length: 30 }, () => ({ name: 'quick' })));
    open();
    await waitFor(async () => (await state(store, 'success')) === 10 && (await state(store, 'running')) === 5, 'a claim of 5 in flight');
    const stopping = stop();
    answer();
    await stopping;
    expect(await state(store, 'running')).toBe(0);
    expect(await state(store, 'waiting')).toBe(30);
    expect((await store.list({ state: 'waiting' })).every((t) => t.attempt === 0 && t.leaseOwner === null)).toBe(true);
  });

  it('stop() hands back a task aborted at the end of the drain, its attempt not counted', async () => {
    let aborted = false;
    const registry = new TaskRegistry().register(
      'hang',
      (_a, { signal }) => new Promise(() => signal.addEventListener('abort', () => (aborted = true))),
    );
    const { store, stop } = await runner(registry, 2, new PGliteTaskStore(), 50);
    const [hung] = await store.enqueue([{ name: 'hang' }]);
    await waitFor(async () => (await state(store, 'running')) === 1, 'the task to run');
    await stop();
    expect(aborted).toBe(true);
    expect(await store.get(hung?.id as string)).toMatchObject({ state: 'waiting', attempt: 0, leaseOwner: null });
  });

  it('a runner with maxDemand 10 never holds more than 10 claimed tasks', async () => {
    let maxRunning = 0;
    const registry = new TaskRegistry().register('slow', async () => {
      await new Promise((r) => setTimeout(r, 5));
    });
    const { store } = await runner(registry, 10);
    await store.enqueue(Array.from({ length: 150 }, () => ({ name: 'slow' })));
    await waitFor(async () => {
      maxRunning = Math.max(maxRunning, await state(store, 'running'));
      return (await state(store, 'success')) === 150;
    }, '150 successes');
    expect(maxRunning).toBeGreaterThan(0);
    expect(maxRunning).toBeLessThanOrEqual(10);
  });
});
