import { describe, expect, it } from 'vitest';
import {
  type AnyStageSpec,
  concurrentConsumer,
  consumer,
  FakeClock,
  type StageMessage,
  type StagePeer,
  StageSystem,
  type TaskOutcome,
} from '../src/index.js';
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

/**
 * Stands in for a producer on another node, as the fabric's proxy does: it
 * wants to hear when events are handled (its inbox entries are acknowledged then).
 */
class RemoteStandIn implements StagePeer {
  readonly id = 999_999;
  readonly name = 'remote';
  readonly label = 'remote';
  readonly alive = true;
  readonly wantsHandled = true;
  readonly handled: number[] = [];
  asked = 0;
  private consumer: StagePeer | undefined;
  private subscriptionId = 0;

  deliver(message: StageMessage): void {
    if (message.t === 'subscribe') {
      this.consumer = message.consumer;
      this.subscriptionId = message.subscription.id;
    } else if (message.t === 'ask') this.asked += message.count;
    else if (message.t === 'handled') this.handled.push(message.count);
  }

  send(events: number[]): void {
    this.consumer?.deliver({ t: 'events', id: this.subscriptionId, events });
  }
}

async function withStandIn(spec: AnyStageSpec): Promise<{ sys: StageSystem; remote: RemoteStandIn }> {
  const remote = new RemoteStandIn();
  const sys = new StageSystem({ clock: new FakeClock(), resolve: (name) => (name === 'remote' ? remote : undefined) });
  await sys.start(spec, undefined);
  await sys.idle();
  return { sys, remote };
}

describe('handled reports to a producer on another node', () => {
  it('a consumer reports a batch handled when handleEvents has returned', async () => {
    const { sys, remote } = await withStandIn(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'remote', maxDemand: 10 }] }),
        handleEvents: () => undefined,
      }),
    );
    remote.send([1, 2, 3]);
    await sys.idle();
    expect(remote.handled).toEqual([3]);
  });

  it('a count reported handled that is not a non-negative integer stops the stage with SF_BAD_ASK, naming it', async () => {
    const { sys, remote } = await withStandIn(
      consumer<null, number>({
        reportsHandled: true,
        init: () => ({ state: null, subscribeTo: [{ to: 'remote', maxDemand: 10 }] }),
        handleEvents: (_events, subscription, _state, ctx) => ctx.handled(subscription, -1),
      }),
    );
    const exits: unknown[] = [];
    sys.on('event', (e) => e.type === 'stage-exit' && exits.push(e.reason));
    remote.send([1]);
    await sys.idle();
    expect(exits).toHaveLength(1);
    expect(exits[0]).toMatchObject({
      code: 'SF_BAD_ASK',
      message: expect.stringMatching(/stage consumer#\d+: handled\(-1\): the count of events done/),
    });
    expect(remote.handled).toEqual([]);
  });

  it('a concurrentConsumer reports events only once their tasks finished, oldest first, never one still running', async () => {
    const tasks = controllable();
    const { sys, remote } = await withStandIn(
      concurrentConsumer<number, string>({ subscribeTo: [{ to: 'remote', maxDemand: 10 }], run: tasks.run, timeoutMs: 60_000 }),
    );
    remote.send([1, 2, 3]);
    remote.send([4]);
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([1, 2, 3, 4]);
    // handleEvents has returned, but every task still runs: nothing is reported.
    expect(remote.handled).toEqual([]);
    tasks.resolvers.get(2)?.resolve('two');
    tasks.resolvers.get(4)?.resolve('four');
    await sys.idle();
    // 2 and 4 are done, but 1 runs still: reporting 2 would let its entry (which holds 1) be acknowledged.
    expect(remote.handled).toEqual([]);
    tasks.resolvers.get(1)?.reject(new Error('one failed'));
    await sys.idle();
    // A failed task is done too (its outcome is recorded): 1 and 2 go, 3 still runs.
    expect(remote.handled).toEqual([2]);
    tasks.resolvers.get(3)?.resolve('three');
    await sys.idle();
    expect(remote.handled).toEqual([2, 2]);
  });

  it('a concurrentConsumer with onOutcome reports an event once its outcome is recorded', async () => {
    const tasks = controllable();
    let record: () => void = () => {};
    const { sys, remote } = await withStandIn(
      concurrentConsumer<number, string>({
        subscribeTo: [{ to: 'remote', maxDemand: 10 }],
        run: tasks.run,
        timeoutMs: 60_000,
        onOutcome: () =>
          new Promise<void>((resolve) => {
            record = resolve;
          }),
      }),
    );
    remote.send([1]);
    await sys.idle();
    tasks.resolvers.get(1)?.resolve('one');
    await sys.idle();
    expect(remote.handled).toEqual([]);
    record();
    await sys.idle();
    expect(remote.handled).toEqual([1]);
  });
});

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

  it('tasks of different timeouts each time out at their own deadline, all on one timer that is gone once none runs', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    const tasks = controllable();
    const outcomes: TaskOutcome<number, string>[] = [];
    await sys.start(counter({ limit: 3 }), 0, { name: 'jobs' });
    const timers = clock.pendingTimers;
    await sys.start(
      concurrentConsumer<number, string>({
        subscribeTo: [{ to: 'jobs', maxDemand: 3 }],
        run: tasks.run,
        // Event 0 times out last, event 2 first: deadlines out of start order.
        timeoutMs: (event) => [300, 200, 100][event] ?? 1000,
        onOutcome: (o) => void outcomes.push(o),
      }),
      undefined,
    );
    await sys.idle();
    expect([...tasks.resolvers.keys()]).toEqual([0, 1, 2]);
    // Three tasks running, one timer for their deadlines.
    expect(clock.pendingTimers).toBe(timers + 1);
    clock.advance(100);
    await sys.idle();
    expect(outcomes.map((o) => [o.event, o.status, o.durationMs])).toEqual([[2, 'timeout', 100]]);
    expect(tasks.resolvers.get(2)?.signal.aborted).toBe(true);
    expect(tasks.resolvers.get(1)?.signal.aborted).toBe(false);
    // Event 1 returns before its deadline: its outcome is its own, and no timeout follows.
    tasks.resolvers.get(1)?.resolve('one');
    await sys.idle();
    clock.advance(150);
    await sys.idle();
    expect(outcomes.map((o) => [o.event, o.status])).toEqual([
      [2, 'timeout'],
      [1, 'success'],
    ]);
    clock.advance(50);
    await sys.idle();
    expect(outcomes.map((o) => [o.event, o.status, o.durationMs])).toContainEqual([0, 'timeout', 300]);
    expect(tasks.resolvers.get(0)?.signal.reason).toMatchObject({ code: 'SF_TASK_TIMEOUT', message: 'task timed out after 300 ms' });
    tasks.resolvers.get(0)?.resolve('late');
    tasks.resolvers.get(2)?.resolve('late');
    await sys.idle();
    expect(clock.pendingTimers).toBe(timers);
  });

  it('a handler that reads its signal only after its timeout finds it aborted with the timeout', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    let context: { readonly signal: AbortSignal } | undefined;
    let finish: (() => void) | undefined;
    const outcomes: TaskOutcome<number, unknown>[] = [];
    await sys.start(counter({ limit: 1 }), 0, { name: 'jobs' });
    await sys.start(
      concurrentConsumer<number>({
        subscribeTo: [{ to: 'jobs', maxDemand: 1 }],
        run: (_event, ctx) => {
          context = ctx;
          return new Promise<void>((resolve) => {
            finish = resolve;
          });
        },
        timeoutMs: 100,
        onOutcome: (o) => void outcomes.push(o),
      }),
      undefined,
    );
    await sys.idle();
    clock.advance(100);
    await sys.idle();
    expect(outcomes.map((o) => o.status)).toEqual(['timeout']);
    expect(context?.signal.aborted).toBe(true);
    expect(context?.signal.reason).toBe(outcomes[0]?.error);
    expect(context?.signal.reason).toMatchObject({ code: 'SF_TASK_TIMEOUT' });
    finish?.();
  });
});
