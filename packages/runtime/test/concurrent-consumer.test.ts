import { describe, expect, it } from 'vitest';
import { concurrentConsumer, FakeClock, StageSystem, type TaskOutcome } from '../src/index.js';
import { counter, waitFor } from './fixtures.js';

/** A task whose completion the test controls. */
function controllable() {
  const resolvers = new Map<number, { resolve: (v: string) => void; reject: (e: Error) => void; signal: AbortSignal }>();
  const run = (event: number, { signal }: { signal: AbortSignal }) =>
    new Promise<string>((resolve, reject) => {
      resolvers.set(event, { resolve, reject, signal });
    });
  return { resolvers, run };
}

describe('concurrentConsumer', () => {
  it('runs at most maxDemand tasks at once and takes a new event only when one finishes', async () => {
    const sys = new StageSystem({ clock: new FakeClock() });
    const tasks = controllable();
    const outcomes: TaskOutcome<number, string>[] = [];
    await sys.start(counter({ limit: 20 }), 0, { name: 'jobs' });
    await sys.start(
      concurrentConsumer<number, string>({
        subscribeTo: [{ to: 'jobs', maxDemand: 3, minDemand: 2 }],
        run: tasks.run,
        timeoutMs: 1000,
        onOutcome: (o) => void outcomes.push(o),
      }),
      undefined,
    );
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0, 1, 2]);
    tasks.resolvers.get(1)?.resolve('one');
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0, 1, 2, 3]);
    tasks.resolvers.get(0)?.reject(new Error('zero failed'));
    await sys.idle();
    expect(outcomes.map((o) => [o.event, o.status])).toEqual([
      [1, 'success'],
      [0, 'error'],
    ]);
    expect(outcomes[0]?.value).toBe('one');
    expect(outcomes[1]?.error).toMatchObject({ message: 'zero failed' });
    expect(tasks.resolvers.size).toBe(5);
  });

  it('a task that outlives its timeout is reported as timeout and its signal aborts; its slot is freed once its handler returns', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    const tasks = controllable();
    const outcomes: TaskOutcome<number, string>[] = [];
    await sys.start(counter({ limit: 3 }), 0, { name: 'jobs' });
    await sys.start(
      concurrentConsumer<number, string>({
        subscribeTo: [{ to: 'jobs', maxDemand: 1, minDemand: 0 }],
        run: tasks.run,
        timeoutMs: 1000,
        onOutcome: (o) => void outcomes.push(o),
      }),
      undefined,
    );
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0]);
    clock.advance(999);
    await sys.idle();
    expect(outcomes).toEqual([]);
    clock.advance(1);
    await sys.idle();
    expect(outcomes.map((o) => [o.event, o.status, o.durationMs])).toEqual([[0, 'timeout', 1000]]);
    expect(tasks.resolvers.get(0)?.signal.aborted).toBe(true);
    // The handler has not returned: it still holds the one slot, so nothing new starts.
    clock.advance(5000);
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0]);
    // Its late result is not reported; its slot serves the next task.
    tasks.resolvers.get(0)?.resolve('late');
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0, 1]);
    tasks.resolvers.get(1)?.resolve('ok');
    await sys.idle();
    expect(outcomes.map((o) => [o.event, o.status])).toEqual([
      [0, 'timeout'],
      [1, 'success'],
    ]);
  });

  it('concurrency bounds running handlers: handlers that ignore their timeout keep their slots', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    const tasks = controllable();
    const outcomes: TaskOutcome<number, string>[] = [];
    await sys.start(counter({ limit: 10 }), 0, { name: 'jobs' });
    await sys.start(
      concurrentConsumer<number, string>({
        subscribeTo: [{ to: 'jobs', maxDemand: 6 }],
        concurrency: 2,
        run: tasks.run,
        timeoutMs: 100,
        onOutcome: (o) => void outcomes.push(o),
      }),
      undefined,
    );
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0, 1]);
    clock.advance(100);
    await sys.idle();
    expect(outcomes.map((o) => [o.event, o.status])).toEqual([
      [0, 'timeout'],
      [1, 'timeout'],
    ]);
    // Both timed out, both still running: the four prefetched events wait.
    expect([...tasks.resolvers.keys()]).toEqual([0, 1]);
    tasks.resolvers.get(1)?.resolve('late');
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0, 1, 2]);
    tasks.resolvers.get(2)?.resolve('two');
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0, 1, 2, 3]);
    expect(outcomes.map((o) => [o.event, o.status])).toEqual([
      [0, 'timeout'],
      [1, 'timeout'],
      [2, 'success'],
    ]);
  });

  it('a handler that throws synchronously is an error outcome, not a crash', async () => {
    const sys = new StageSystem({ clock: new FakeClock() });
    const outcomes: TaskOutcome<number, unknown>[] = [];
    await sys.start(counter({ limit: 2 }), 0, { name: 'jobs' });
    const c = await sys.start(
      concurrentConsumer<number>({
        subscribeTo: [{ to: 'jobs', maxDemand: 2, cancel: 'temporary' }],
        run: () => {
          throw new Error('sync boom');
        },
        onOutcome: (o) => void outcomes.push(o),
      }),
      undefined,
    );
    await sys.idle();
    expect(outcomes.map((o) => o.status)).toEqual(['error', 'error']);
    expect(sys.list()).toContain(c);
  });

  it('outcome recording is awaited before the slot is asked for again', async () => {
    const sys = new StageSystem({ clock: new FakeClock() });
    let release: (() => void) | undefined;
    const started: number[] = [];
    await sys.start(counter({ limit: 5 }), 0, { name: 'jobs' });
    await sys.start(
      concurrentConsumer<number>({
        subscribeTo: [{ to: 'jobs', maxDemand: 1, minDemand: 0 }],
        run: (e) => void started.push(e),
        onOutcome: () =>
          new Promise<void>((r) => {
            release = r;
          }),
      }),
      undefined,
    );
    await waitFor(() => release !== undefined, 'the first outcome to be recorded');
    expect(started).toEqual([0]);
    release?.();
    await waitFor(() => started.length === 2, 'the second task to start');
    expect(started).toEqual([0, 1]);
  });
});
