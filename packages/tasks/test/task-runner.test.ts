import { FakeClock, producer, StageSystem } from '@stagefabric/runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import {
  type ClaimedTask,
  type LeaseLossPhase,
  type RefusalReason,
  startTaskPipeline,
  type TaskPipelineOptions,
  TaskRegistry,
  type TaskStore,
  taskProducer,
  taskRunner,
} from '../src/index.js';
import { PGliteTaskStore } from '../src/pglite-task-store.js';

/**
 * The producer and runner on a FakeClock: leases, flushes, polls, timeouts,
 * retries and drains move only when the test moves the clock. Store I/O is
 * real (PGlite), so each wait moves the clock on a little at every look.
 */
interface Rig {
  readonly store: PGliteTaskStore;
  readonly system: StageSystem;
  readonly clock: FakeClock;
  readonly refused: { task: ClaimedTask; reason: RefusalReason }[];
  readonly lost: { task: ClaimedTask; phase: LeaseLossPhase }[];
  readonly dropped: string[];
  until(condition: () => boolean | Promise<boolean>, what: string, stepMs?: number): Promise<void>;
  /** Runs `action` (a stop) while moving the clock, as time passes during a drain. */
  during<T>(action: Promise<T>, stepMs?: number): Promise<T>;
}

const rigs: Rig[] = [];
afterEach(async () => {
  for (const rig of rigs.splice(0)) {
    await rig.during(rig.system.shutdown(), 1000);
    await rig.store.close();
  }
});

async function rig(store: PGliteTaskStore = new PGliteTaskStore()): Promise<Rig> {
  await store.migrate();
  const clock = new FakeClock(Date.now());
  const system = new StageSystem({ clock });
  const until = (condition: () => boolean | Promise<boolean>, what: string, stepMs = 5) =>
    waitFor(async () => {
      clock.advance(stepMs);
      return condition();
    }, what);
  const during = async <T>(action: Promise<T>, stepMs = 5): Promise<T> => {
    let done = false;
    const result = action.finally(() => {
      done = true;
    });
    await until(() => done, 'the stop to finish', stepMs);
    return result;
  };
  const r: Rig = { store, system, clock, refused: [], lost: [], dropped: [], until, during };
  rigs.push(r);
  return r;
}

/** A producer and a runner under one owner, as on one node. */
async function pipeline(registry: TaskRegistry, options: Partial<TaskPipelineOptions> = {}, store?: PGliteTaskStore) {
  const r = await rig(store);
  const maxDemand = options.maxDemand ?? 20;
  const p = await startTaskPipeline(r.system, {
    store: r.store,
    registry,
    owner: 'node-1',
    pollIntervalMs: 50,
    maxDemand,
    minDemand: Math.floor(maxDemand / 2),
    backoff: { baseMs: 20, maxMs: 50 },
    onOutcomeRefused: (task, _outcome, reason) => r.refused.push({ task, reason }),
    onLeaseLost: (task, phase) => r.lost.push({ task, phase }),
    onDropped: (_event, problem) => r.dropped.push(problem),
    ...options,
  });
  return { ...r, ref: p.runner, producerRef: p.producer, stop: p.stop };
}

/** A PGlite store whose claims, while `hold` is set, take effect at once and are answered only once it settles. */
class HeldClaims extends PGliteTaskStore {
  hold: Promise<void> | undefined;
  /** The producer's claim (it looks ahead on the SQL stores). */
  override async claimLookingAhead(...args: Parameters<PGliteTaskStore['claimLookingAhead']>) {
    const claimed = await super.claimLookingAhead(...args);
    await this.hold;
    return claimed;
  }
}

/** A PGlite store whose take-overs, while `hold` is set, take effect at once and are answered only once it settles; it notes every extension asked. */
class HeldAdoptions extends PGliteTaskStore {
  hold: Promise<void> | undefined;
  readonly extended: string[] = [];
  override async adopt(...args: Parameters<PGliteTaskStore['adopt']>) {
    const taken = await super.adopt(...args);
    await this.hold;
    return taken;
  }
  override extendLeases(...args: Parameters<PGliteTaskStore['extendLeases']>) {
    this.extended.push(...args[0].map((c) => `${c.id}:${c.claimant}`));
    return super.extendLeases(...args);
  }
}

const state = async (store: TaskStore, state: string) =>
  (await store.counts()).filter((c) => c.state === state).reduce((n, c) => n + c.count, 0);

/** A promise the test resolves. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

describe('task producer and runner', () => {
  it('runs every task exactly once and records success', async () => {
    const runs = new Map<number, number>();
    const registry = new TaskRegistry().register('count', (n: number) => void runs.set(n, (runs.get(n) ?? 0) + 1));
    const { store, until } = await pipeline(registry);
    await store.enqueue(Array.from({ length: 200 }, (_, n) => ({ name: 'count', args: n })));
    await until(async () => (await state(store, 'success')) === 200, '200 successes');
    expect(runs.size).toBe(200);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(await store.counts()).toEqual([{ queue: 'default', state: 'success', count: 200 }]);
  });

  it('a handler reports progress through ctx.progress: the task shows it while running and after; bad progress is refused', async () => {
    const step = gate();
    let refused: unknown;
    const registry = new TaskRegistry().register('long', async (_args: unknown, ctx) => {
      expect(await ctx.progress(40)).toBe(true);
      await step.opened;
      await ctx.progress(-1).catch((error: unknown) => (refused = error));
      expect(await ctx.progress({ step: 'upload', done: 3, of: 4 })).toBe(true);
    });
    const { store, until } = await pipeline(registry);
    const [{ id } = { id: '' }] = await store.enqueue([{ name: 'long' }]);
    await until(async () => (await store.get(id))?.progress === 40, 'progress 40 while running');
    expect((await store.get(id))?.state).toBe('running');
    step.open();
    await until(async () => (await store.get(id))?.state === 'success', 'the task to succeed');
    expect((await store.get(id))?.progress).toEqual({ step: 'upload', done: 3, of: 4 });
    expect(refused).toMatchObject({ code: 'SF_BAD_OPTION', message: expect.stringMatching(/percentage from 0 to 100/) });
  });

  it('outcomes wait for the flush on the stage clock: none is written before flushMs has passed', async () => {
    let ran = false;
    const registry = new TaskRegistry().register('quick', () => {
      ran = true;
    });
    const { store, system, clock, until } = await pipeline(registry, { flushMs: 1000 });
    await store.enqueue([{ name: 'quick' }]);
    // Claimed on the enqueue notification: no time needs to pass.
    await waitFor(() => ran, 'the task to run');
    await system.idle();
    clock.advance(999);
    await system.idle();
    expect(await state(store, 'running')).toBe(1);
    await until(async () => (await state(store, 'success')) === 1, 'the flush', 1);
  });

  it('a handler that always throws is retried with backoff, then failed for good, while other tasks flow', async () => {
    const attempts: number[] = [];
    const registry = new TaskRegistry()
      .register('fail', (_a, { task }) => {
        attempts.push(task.attempt);
        throw new Error(`broken on attempt ${task.attempt}`);
      })
      .register('ok', () => undefined);
    const { store, until } = await pipeline(registry);
    const [bad] = await store.enqueue([{ name: 'fail', options: { maxAttempts: 3 } }]);
    await store.enqueue(Array.from({ length: 50 }, () => ({ name: 'ok' })));
    await until(
      async () => (await store.get(bad?.id as string))?.state === 'error' && (await state(store, 'success')) === 50,
      'the failure to be final',
    );
    expect(attempts).toEqual([1, 2, 3]);
    expect(await store.get(bad?.id as string)).toMatchObject({ state: 'error', attempt: 3, lastError: 'broken on attempt 3' });
  });

  it('a hanging handler times out on the clock, its signal aborted, and its slot serves the next task once it returns', async () => {
    let aborted = false;
    const registry = new TaskRegistry()
      .register(
        'hang',
        (_a, { signal }) =>
          new Promise((_resolve, reject) =>
            signal.addEventListener('abort', () => {
              aborted = true;
              reject(signal.reason);
            }),
          ),
      )
      .register('ok', () => undefined);
    const { store, system, clock, until } = await pipeline(registry, { maxDemand: 1 });
    const [hung] = await store.enqueue([{ name: 'hang', options: { timeoutMs: 100, maxAttempts: 1 } }]);
    await until(async () => (await state(store, 'running')) === 1, 'the hanging task to run', 1);
    await store.enqueue([{ name: 'ok' }, { name: 'ok' }]);
    clock.advance(90);
    await system.idle();
    expect(aborted).toBe(false);
    await until(async () => (await state(store, 'success')) === 2, 'the two others to run in the freed slot');
    expect(aborted).toBe(true);
    expect(await store.get(hung?.id as string)).toMatchObject({ state: 'timeout', lastError: 'timed out after 100 ms' });
  });

  it('concurrency bounds running handlers: a handler past its timeout that ignores its signal keeps its slot', async () => {
    let running = 0;
    let most = 0;
    const stuck = gate();
    const registry = new TaskRegistry().register('stubborn', async () => {
      running++;
      most = Math.max(most, running);
      await stuck.opened;
      running--;
    });
    const { store, until } = await pipeline(registry, { concurrency: 2, maxDemand: 10 });
    await store.enqueue(Array.from({ length: 6 }, () => ({ name: 'stubborn', options: { timeoutMs: 50, maxAttempts: 1 } })));
    await until(async () => (await state(store, 'timeout')) === 2, 'two timeouts recorded');
    // Their handlers still run: the other four wait, claimed and prefetched, however long.
    await until(async () => (await state(store, 'running')) === 4, 'the rest to wait in hand', 1000);
    expect(running).toBe(2);
    stuck.open();
    await until(async () => (await state(store, 'success')) === 4, 'the four others to run once the slots are free');
    expect(await state(store, 'timeout')).toBe(2);
    expect(most).toBe(2);
  });

  it('an unknown handler is an error naming it and the known ones, never a crash', async () => {
    const { store, system, ref, until } = await pipeline(new TaskRegistry().register('known', () => undefined));
    const [t] = await store.enqueue([{ name: 'mystery', options: { maxAttempts: 1 } }]);
    await until(async () => (await store.get(t?.id as string))?.state === 'error', 'the error');
    expect((await store.get(t?.id as string))?.lastError).toBe('no handler registered for task "mystery" (registered: known)');
    expect(system.list()).toContain(ref);
  });

  it('leases of tasks in hand are extended every third of leaseMs on the stage clock, and not before', async () => {
    const held = gate();
    const registry = new TaskRegistry().register('held', () => held.opened);
    const { store, system, clock, until } = await pipeline(registry, { leaseMs: 30_000 });
    // The runner's first extension falls due a third of the lease after it started, now.
    const dueAt = clock.now() + 10_000;
    const [t] = await store.enqueue([{ name: 'held' }]);
    await until(async () => (await state(store, 'running')) === 1, 'the task to run', 1);
    const leaseAt = async () => (await store.get(t?.id as string))?.leaseExpiresAt?.getTime() ?? 0;
    const first = await leaseAt();
    clock.advance(dueAt - 10 - clock.now());
    await system.idle();
    expect(await leaseAt()).toBe(first);
    await until(async () => (await leaseAt()) > first, 'the lease to be extended', 1);
    held.open();
    await until(async () => (await state(store, 'success')) === 1, 'the success');
  });

  it('a run whose lease is lost is aborted through its signal, reported, and its outcome never written', async () => {
    let reason: unknown;
    const registry = new TaskRegistry().register(
      'long',
      (_a, { signal }) =>
        new Promise((_resolve, reject) =>
          signal.addEventListener('abort', () => {
            reason = signal.reason;
            reject(signal.reason);
          }),
        ),
    );
    const { store, lost, until } = await pipeline(registry, { leaseMs: 3000 });
    const [t] = await store.enqueue([{ name: 'long', options: { maxAttempts: 1 } }]);
    await until(async () => (await state(store, 'running')) === 1, 'the task to run', 1);
    // Another node holds it now (its lease lapsed and was taken while this one stalled).
    expect(await store.adopt([{ id: t?.id as string, attempt: 1, claimant: 'node-1' }], 'node-2', 60_000)).toHaveLength(1);
    await until(() => lost.length === 1, 'the lease loss to be found', 100);
    expect(lost[0]).toMatchObject({ task: { id: t?.id }, phase: 'running' });
    expect(reason).toMatchObject({ code: 'SF_LEASE_LOST' });
    expect(await store.get(t?.id as string)).toMatchObject({ state: 'running', leaseOwner: 'node-2' });
  });

  it('a handler that reads its signal only after its lease was lost finds it aborted, with the lease loss as reason', async () => {
    const resumed = gate();
    let seen: AbortSignal | undefined;
    const registry = new TaskRegistry().register('late-reader', async (_a, context) => {
      await resumed.opened;
      seen = context.signal;
    });
    const { store, lost, until } = await pipeline(registry, { leaseMs: 3000 });
    const [t] = await store.enqueue([{ name: 'late-reader', options: { maxAttempts: 1 } }]);
    await until(async () => (await state(store, 'running')) === 1, 'the task to run', 1);
    expect(await store.adopt([{ id: t?.id as string, attempt: 1, claimant: 'node-1' }], 'node-2', 60_000)).toHaveLength(1);
    await until(() => lost.length === 1, 'the lease loss to be found', 100);
    resumed.open();
    await until(() => seen !== undefined, 'the handler to read its signal', 1);
    expect(seen?.aborted).toBe(true);
    expect(seen?.reason).toMatchObject({ code: 'SF_LEASE_LOST' });
    expect(await store.get(t?.id as string)).toMatchObject({ state: 'running', leaseOwner: 'node-2' });
  });

  it('an outcome the store refuses is reported with its reason: lease-lost, or finished when another run finished it', async () => {
    const gates = new Map<string, ReturnType<typeof gate>>();
    const registry = new TaskRegistry().register('gated', (key: string) => gates.get(key)?.opened);
    gates.set('a', gate());
    gates.set('b', gate());
    const { store, refused, until } = await pipeline(registry);
    const [a, b] = await store.enqueue([
      { name: 'gated', args: 'a' },
      { name: 'gated', args: 'b' },
    ]);
    await until(async () => (await state(store, 'running')) === 2, 'both to run', 1);
    const [a2, b2] = await store.adopt(
      [
        { id: a?.id as string, attempt: 1, claimant: 'node-1' },
        { id: b?.id as string, attempt: 1, claimant: 'node-1' },
      ],
      'node-2',
      60_000,
    );
    await store.complete([{ ...(b2 as NonNullable<typeof b2>), status: 'success' }]);
    gates.get('a')?.open();
    gates.get('b')?.open();
    await until(() => refused.length === 2, 'both refusals', 1);
    expect(refused.map((r) => [r.task.id, r.reason]).sort()).toEqual(
      [
        [a?.id, 'lease-lost'],
        [b?.id, 'finished'],
      ].sort(),
    );
    expect(await store.get(a?.id as string)).toMatchObject({ state: 'running', leaseOwner: 'node-2' });
    expect(a2).toBeDefined();
  });

  it('tasks a producer of another node claimed are taken over by the runner that runs them, extended and recorded by it', async () => {
    const { store, system, until } = await rig();
    const owners: string[] = [];
    const registry = new TaskRegistry().register('where', async (_a, { task }) => {
      owners.push((await store.get(task.id))?.leaseOwner ?? '?');
    });
    const tasks = await system.start(taskProducer({ store, owner: 'node-a', pollIntervalMs: 50 }), undefined, { name: 'tasks' });
    await system.start(taskRunner({ store, registry, owner: 'node-b', subscribeTo: [{ to: tasks, maxDemand: 20 }] }), undefined);
    await store.enqueue(Array.from({ length: 100 }, () => ({ name: 'where' })));
    await until(async () => (await state(store, 'success')) === 100, '100 successes');
    expect(new Set(owners)).toEqual(new Set(['node-b']));
    expect((await store.list({ limit: 200 })).every((t) => t.attempt === 1)).toBe(true);
  });

  it('a lease extension that falls due while tasks are being taken over leaves them be: they run under the new claim', async () => {
    const store = new HeldAdoptions();
    const { system, clock, lost, until } = await rig(store);
    const registry = new TaskRegistry().register('quick', () => undefined);
    const tasks = await system.start(taskProducer({ store, owner: 'node-a', pollIntervalMs: 50 }), undefined, { name: 'tasks' });
    await system.start(
      taskRunner({
        store,
        registry,
        owner: 'node-b',
        leaseMs: 3000,
        subscribeTo: [{ to: tasks, maxDemand: 5 }],
        onLeaseLost: (task, phase) => lost.push({ task, phase }),
      }),
      undefined,
    );
    let answer!: () => void;
    store.hold = new Promise((resolve) => (answer = resolve));
    await store.enqueue(Array.from({ length: 5 }, () => ({ name: 'quick' })));
    await waitFor(
      async () => (await store.list({ state: 'running' })).filter((t) => t.leaseOwner === 'node-b').length === 5,
      'the take-over',
    );
    // Two extensions fall due before the take-over is answered: they leave the tasks alone (an extension is asked for at once).
    clock.advance(2500);
    expect(store.extended).toEqual([]);
    answer();
    await until(async () => (await state(store, 'success')) === 5, 'the five to succeed');
    expect(lost).toEqual([]);
  });

  it('a graceful stop of the producer node hands back only what no runner took over', async () => {
    const { store, system, until, during } = await rig();
    const held = gate();
    const registry = new TaskRegistry().register('held', () => held.opened);
    const tasks = await system.start(taskProducer({ store, owner: 'node-a', pollIntervalMs: 50 }), undefined, { name: 'tasks' });
    // Temporary: the runner outlives its producer, as a runner on another node does.
    await system.start(
      taskRunner({ store, registry, owner: 'node-b', subscribeTo: [{ to: tasks, maxDemand: 5, cancel: 'temporary' }] }),
      undefined,
    );
    await store.enqueue(Array.from({ length: 5 }, () => ({ name: 'held' })));
    await until(
      async () => (await store.list({ state: 'running' })).filter((t) => t.leaseOwner === 'node-b').length === 5,
      'five taken over',
    );
    await during(system.stop(tasks, 'shutdown'));
    expect(await store.releaseHeld('node-a')).toEqual([]);
    expect(await state(store, 'running')).toBe(5);
    held.open();
    await until(async () => (await state(store, 'success')) === 5, 'the five to succeed on node-b');
  });

  it('stop() hands back what the node still holds: tasks of a claim answered while it stopped go back to waiting', async () => {
    const gated = gate();
    const registry = new TaskRegistry().register('gated', () => gated.opened).register('quick', () => undefined);
    const store = new HeldClaims();
    const { stop, until, during } = await pipeline(registry, { maxDemand: 10 }, store);
    await store.enqueue(Array.from({ length: 10 }, () => ({ name: 'gated' })));
    await until(async () => (await state(store, 'running')) === 10, 'ten gated tasks running');
    // The next claim takes its tasks and is not answered until the node is stopping.
    let answer!: () => void;
    store.hold = new Promise((resolve) => (answer = resolve));
    await store.enqueue(Array.from({ length: 30 }, () => ({ name: 'quick' })));
    gated.open();
    await until(async () => (await state(store, 'success')) === 10 && (await state(store, 'running')) === 5, 'a claim of 5 in flight');
    const stopping = stop();
    answer();
    await during(stopping);
    expect(await state(store, 'running')).toBe(0);
    expect(await state(store, 'waiting')).toBe(30);
    expect((await store.list({ state: 'waiting' })).every((t) => t.attempt === 0 && t.leaseOwner === null)).toBe(true);
  });

  it('stop() hands back a task aborted at the end of the drain (drainMs on the clock), its attempt not counted', async () => {
    let aborted = false;
    const registry = new TaskRegistry().register(
      'hang',
      (_a, { signal }) => new Promise(() => signal.addEventListener('abort', () => (aborted = true))),
    );
    const { store, clock, stop, until } = await pipeline(registry, { maxDemand: 2, drainMs: 5000 });
    const [hung] = await store.enqueue([{ name: 'hang' }]);
    await until(async () => (await state(store, 'running')) === 1, 'the task to run');
    const stoppedAt = clock.now();
    let stopped = false;
    const stopping = stop().then(() => (stopped = true));
    await until(() => aborted, 'the drain to end', 50);
    expect(clock.now() - stoppedAt).toBeGreaterThanOrEqual(5000);
    await until(() => stopped, 'the stop to finish', 50);
    await stopping;
    expect(await store.get(hung?.id as string)).toMatchObject({ state: 'waiting', attempt: 0, leaseOwner: null });
  });

  it('a runner with maxDemand 10 never holds more than 10 claimed tasks', async () => {
    let maxRunning = 0;
    // Each run reads how many tasks the store has claimed while it runs: never fewer than its own, never more than 10.
    let rigged: Awaited<ReturnType<typeof pipeline>> | undefined;
    const registry = new TaskRegistry().register('slow', async () => {
      if (rigged !== undefined) maxRunning = Math.max(maxRunning, await state(rigged.store, 'running'));
      await new Promise((r) => setTimeout(r, 5));
    });
    rigged = await pipeline(registry, { maxDemand: 10 });
    const { store, until } = rigged;
    await store.enqueue(Array.from({ length: 150 }, () => ({ name: 'slow' })));
    await until(async () => (await state(store, 'success')) === 150, '150 successes');
    expect(maxRunning).toBeGreaterThan(0);
    expect(maxRunning).toBeLessThanOrEqual(10);
  });

  it('an event that is not a claimed task (from the wire) is dropped and reported, and its demand asked for again', async () => {
    const { store, system, dropped, until } = await rig();
    const asked: number[] = [];
    const garbage = producer<number, unknown, void>({
      init: () => ({ state: 0 }),
      handleDemand(demand, sent) {
        asked.push(demand);
        const events = sent === 0 ? [{ id: 7 }, 'junk', { id: '1', queue: 'default', name: 'x', attempt: 0 }] : [];
        return { events, state: sent + events.length };
      },
    });
    const source = await system.start(garbage, undefined);
    const registry = new TaskRegistry().register('x', () => undefined);
    const runner = taskRunner({
      store,
      registry,
      owner: 'node-1',
      subscribeTo: [{ to: source, maxDemand: 4, minDemand: 1 }],
      onDropped: (_event, problem) => dropped.push(problem),
    });
    await system.start(runner, undefined);
    await until(() => dropped.length === 3 && asked.length >= 2, 'three drops and demand asked again');
    expect(dropped).toEqual(['id must be a non-empty string', 'not an object', 'claimant must be a non-empty string']);
    expect(asked[1]).toBe(3);
  });
});

describe('per-handler backoff in the runner', () => {
  it('a failed attempt waits its handler’s backoff (fixed, or a function of attempt and error), not the runner’s', async () => {
    const registry = new TaskRegistry()
      .register(
        'fixed',
        () => {
          throw new Error('down');
        },
        { backoff: { type: 'fixed', delayMs: 60_000 } },
      )
      .register(
        'decides',
        () => {
          throw new Error('HTTP 429');
        },
        { backoff: (attempt, error) => (error.includes('429') ? 120_000 + attempt : 0) },
      );
    const { store, clock, until } = await pipeline(registry);
    const [fixed, decides] = await store.enqueue([{ name: 'fixed' }, { name: 'decides' }]);
    const failedOnce = async (id: string) => {
      const t = await store.get(id);
      return t?.state === 'waiting' && t.lastError !== null;
    };
    await until(async () => (await failedOnce(fixed?.id as string)) && (await failedOnce(decides?.id as string)), 'both to fail once', 1);
    const waits = async (id: string) => ((await store.get(id))?.runAt.getTime() ?? 0) - clock.now();
    // The clock moved on a little while the test looked: the wait is the backoff less that.
    expect(await waits(fixed?.id as string)).toBeGreaterThan(59_000);
    expect(await waits(fixed?.id as string)).toBeLessThanOrEqual(60_000);
    expect(await waits(decides?.id as string)).toBeGreaterThan(120_001 - 1000);
    expect(await waits(decides?.id as string)).toBeLessThanOrEqual(120_001);
  });
});

describe('cancelling a running task', () => {
  it('its run’s signal aborts at the next lease extension, and no outcome is written over the cancel', async () => {
    let aborted: unknown;
    const registry = new TaskRegistry().register(
      'long',
      (_args, { signal }) =>
        new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => {
            aborted = signal.reason;
            resolve();
          }),
        ),
    );
    const { store, until, lost } = await pipeline(registry, { leaseMs: 3000 });
    const [task] = await store.enqueue([{ name: 'long' }]);
    await until(async () => (await store.get(task?.id as string))?.state === 'running', 'the task to run');
    expect(await store.cancelRunning([task?.id as string])).toEqual([task?.id]);
    await until(() => aborted !== undefined, 'the run to be aborted', 200);
    expect((aborted as { code?: string }).code).toBe('SF_LEASE_LOST');
    expect(lost.map((l) => l.phase)).toEqual(['running']);
    expect(await store.get(task?.id as string)).toMatchObject({ state: 'cancelled', lastError: 'cancelled while running' });
    // PGlite on a loaded machine: the pipeline alone can take half a minute to start.
  }, 120_000);
});
