import type { TimerHandle } from './clock.js';
import { FabricError } from './errors.js';
import { badOption, isPositiveInteger } from './options.js';
import { type ConsumerSpec, consumer, type StageContext } from './spec.js';
import { isCleanExit, type StageAddress, type SubscribeOptions, type Subscription } from './types.js';

export type TaskStatus = 'success' | 'error' | 'timeout';

/** What became of one event run as a task. */
export interface TaskOutcome<In, R> {
  readonly event: In;
  readonly status: TaskStatus;
  readonly value?: R;
  readonly error?: unknown;
  readonly durationMs: number;
}

export interface ConcurrentConsumerOptions<In, R> {
  /** Producers to take events from. Each subscription's maxDemand is the most tasks running from it at once. */
  readonly subscribeTo: readonly (StageAddress | SubscribeOptions)[];
  /** Runs one event. The signal aborts when the task times out or the stage stops. */
  readonly run: (event: In, context: { readonly signal: AbortSignal }) => R | Promise<R>;
  /** Per-task timeout (GenStage tutorial: `Task.yield(1000)`). Default 30 000 ms. */
  readonly timeoutMs?: number | ((event: In) => number);
  /**
   * Most tasks running at once, over all subscriptions. Default: unlimited,
   * so each subscription's maxDemand bounds it. Lower, events beyond it wait
   * (in arrival order) in a queue that demand still bounds: a prefetch.
   */
  readonly concurrency?: number;
  /**
   * On a clean stop (normal, shutdown): how long running tasks may finish,
   * their outcomes recorded, before they are aborted. Default 0: abort at once.
   */
  readonly drainMs?: number;
  /** On stop: events received and never started, for the owner to hand back (a task store releases them). */
  readonly onRelease?: (events: In[]) => void | Promise<void>;
  /** Called once per task as it finishes; its slot is asked for again once the returned promise resolves. A rejection stops the stage. */
  readonly onOutcome?: (outcome: TaskOutcome<In, R>) => void | Promise<void>;
}

interface Running<In> {
  readonly event: In;
  readonly subscription: Subscription;
  /** Its place among the events received on its subscription. */
  readonly seq: number;
  readonly controller: AbortController;
  readonly startedAt: number;
  timer: TimerHandle | undefined;
  /** Settles with the task's end, for a drain that can no longer receive messages. */
  settled: Promise<Finished<In, unknown>> | undefined;
  /** Its outcome was reported: at its end, or at its timeout while the handler may still run. */
  reported: boolean;
  /** Its handler returned: its concurrency slot is free. */
  returned: boolean;
  /** Its outcome was recorded: once its handler returned too, its demand is asked for again. */
  recorded: boolean;
}

/** The handler returned (or threw). */
interface Finished<In, R> {
  readonly kind: '$task-finished';
  readonly task: Running<In>;
  readonly status: 'success' | 'error';
  readonly value?: R;
  readonly error?: unknown;
}

interface TimedOut<In> {
  readonly kind: '$task-timeout';
  readonly task: Running<In>;
}

interface Recorded<In> {
  readonly kind: '$task-recorded';
  readonly task: Running<In>;
}

/** Per subscription: which received events are done, so they are reported handled in the order they came. */
interface Settled {
  /** Sequence number of the next event received. */
  received: number;
  /** Events 0..done-1 are all done and reported. */
  done: number;
  /** Done events beyond the first one still running. */
  readonly ahead: Set<number>;
}

interface RecordFailed {
  readonly kind: '$record-failed';
  readonly error: unknown;
}

export interface ConcurrentConsumerState<In> {
  /** Handlers that have not returned, timed out ones included: never more than `concurrency`. */
  readonly running: Set<Running<In>>;
  /** Received, waiting for a free slot (bounded by the subscriptions' demand). */
  readonly queued: { readonly event: In; readonly subscription: Subscription; readonly seq: number }[];
  /** Per subscription: slots freed and not yet asked for again. */
  readonly freed: Map<number, number>;
  readonly limits: Map<number, { readonly max: number; readonly min: number }>;
  readonly subscriptions: Map<number, Subscription>;
  readonly settled: Map<number, Settled>;
  /** The stage's context, kept for terminate, which gets none. */
  ctx: StageContext | undefined;
}

export const CONCURRENT_CONSUMER_DEFAULTS = { timeoutMs: 30_000 } as const;

/**
 * A consumer that runs each event as its own async task (GenStage's
 * ConsumerSupervisor): at most maxDemand tasks per subscription run at once,
 * each with a timeout and an AbortSignal, and each outcome is reported.
 * A slot is asked for again only after its task finished and its outcome
 * was recorded, so a slow outcome store slows intake instead of piling up.
 */
export function concurrentConsumer<In, R = unknown>(
  options: ConcurrentConsumerOptions<In, R>,
): ConsumerSpec<ConcurrentConsumerState<In>, In, void> {
  const where = 'concurrentConsumer';
  if (typeof options.run !== 'function') throw badOption(where, 'run', options.run, 'must be a function');
  const timeoutOf = (event: In): number => {
    const t =
      typeof options.timeoutMs === 'function' ? options.timeoutMs(event) : (options.timeoutMs ?? CONCURRENT_CONSUMER_DEFAULTS.timeoutMs);
    if (!isPositiveInteger(t)) throw badOption(where, 'timeoutMs', t, 'must be a positive integer of milliseconds');
    return t;
  };

  const finish = (ctx: StageContext, message: Finished<In, R>) => ctx.send(ctx.self, message);
  const concurrency = options.concurrency ?? Number.POSITIVE_INFINITY;

  if (concurrency !== Number.POSITIVE_INFINITY && !isPositiveInteger(concurrency))
    throw badOption(where, 'concurrency', concurrency, 'must be a positive integer');

  /** A slot is free again: ask back in batches of (max - min), like the demand of an automatic consumer. */
  const freeSlot = (state: ConcurrentConsumerState<In>, subscription: Subscription, ctx: StageContext) => {
    const limits = state.limits.get(subscription.id);
    if (limits === undefined) return;
    const freed = (state.freed.get(subscription.id) ?? 0) + 1;
    if (freed >= Math.max(1, limits.max - limits.min)) {
      state.freed.set(subscription.id, 0);
      ctx.ask(subscription, freed);
    } else {
      state.freed.set(subscription.id, freed);
    }
  };

  /**
   * An event is done (its task finished and its outcome recorded, or it was
   * handed back): report the run of done events from the oldest not yet
   * reported, so an event still running is never acknowledged upstream.
   */
  const settle = (state: ConcurrentConsumerState<In>, subscription: Subscription, seq: number, ctx: StageContext) => {
    const s = state.settled.get(subscription.id);
    if (s === undefined) return;
    s.ahead.add(seq);
    const from = s.done;
    while (s.ahead.delete(s.done)) s.done++;
    if (s.done > from) ctx.handled(subscription, s.done - from);
  };

  const start = (state: ConcurrentConsumerState<In>, event: In, subscription: Subscription, seq: number, ctx: StageContext) => {
    const task: Running<In> = {
      event,
      subscription,
      seq,
      controller: new AbortController(),
      startedAt: ctx.clock.now(),
      timer: undefined,
      settled: undefined,
      reported: false,
      returned: false,
      recorded: false,
    };
    state.running.add(task);
    task.timer = ctx.clock.setTimeout(() => {
      task.timer = undefined;
      task.controller.abort(new FabricError('SF_TASK_TIMEOUT', `task timed out after ${timeoutOf(event)} ms`));
      ctx.send(ctx.self, { kind: '$task-timeout', task } satisfies TimedOut<In>);
    }, timeoutOf(event));
    let result: R | Promise<R>;
    try {
      result = options.run(event, { signal: task.controller.signal });
    } catch (error) {
      task.settled = Promise.resolve({ kind: '$task-finished', task, status: 'error', error });
      finish(ctx, { kind: '$task-finished', task, status: 'error', error });
      return;
    }
    task.settled = Promise.resolve(result).then(
      (value): Finished<In, R> => ({ kind: '$task-finished', task, status: 'success', value }),
      (error: unknown): Finished<In, R> => ({ kind: '$task-finished', task, status: 'error', error }),
    );
    void task.settled.then((done) => finish(ctx, done as Finished<In, R>));
  };

  /** Reports a task's outcome; its record, once done, comes back as `$task-recorded`. */
  const report = (task: Running<In>, ended: Pick<TaskOutcome<In, R>, 'status' | 'value' | 'error'>, ctx: StageContext) => {
    task.reported = true;
    const outcome: TaskOutcome<In, R> = { event: task.event, durationMs: ctx.clock.now() - task.startedAt, ...ended };
    if (options.onOutcome === undefined) {
      task.recorded = true;
      return;
    }
    // Recorded concurrently, so outcomes finishing together can be stored together; the slot waits for its record.
    const onOutcome = options.onOutcome;
    Promise.resolve()
      .then(() => onOutcome(outcome))
      .then(
        () => ctx.send(ctx.self, { kind: '$task-recorded', task } satisfies Recorded<In>),
        (error: unknown) => ctx.send(ctx.self, { kind: '$record-failed', error }),
      );
  };

  /**
   * A task's concurrency slot is free once its handler returned, even when
   * its timeout was reported long before (a handler that ignores its signal
   * keeps its slot); once its outcome is recorded too, its event is done
   * (reported handled) and its demand asked for again.
   */
  const releaseSlot = (state: ConcurrentConsumerState<In>, task: Running<In>, ctx: StageContext) => {
    if (!task.returned) return;
    if (state.running.delete(task)) {
      const next = state.queued.shift();
      if (next !== undefined) start(state, next.event, next.subscription, next.seq, ctx);
    }
    if (task.recorded) {
      settle(state, task.subscription, task.seq, ctx);
      freeSlot(state, task.subscription, ctx);
    }
  };

  return consumer<ConcurrentConsumerState<In>, In>({
    reportsHandled: true,
    init: () => ({
      state: {
        running: new Set(),
        queued: [],
        freed: new Map(),
        limits: new Map(),
        subscriptions: new Map(),
        settled: new Map(),
        ctx: undefined,
      },
      subscribeTo: options.subscribeTo,
    }),
    handleSubscribe(side, subscribeOptions, subscription, state, ctx) {
      if (side !== 'producer') return;
      const max = subscribeOptions.maxDemand ?? 1000;
      const min = subscribeOptions.minDemand ?? Math.floor(max / 2);
      state.limits.set(subscription.id, { max, min });
      state.subscriptions.set(subscription.id, subscription);
      state.ctx = ctx;
      state.freed.set(subscription.id, 0);
      state.settled.set(subscription.id, { received: 0, done: 0, ahead: new Set() });
      ctx.ask(subscription, max);
      return { demand: 'manual' };
    },
    handleEvents(events, subscription, state, ctx) {
      const settled = state.settled.get(subscription.id);
      for (const event of events) {
        const seq = settled === undefined ? 0 : settled.received++;
        if (state.running.size < concurrency) start(state, event, subscription, seq, ctx);
        else state.queued.push({ event, subscription, seq });
      }
    },
    handleInfo(message, state, ctx) {
      const m = message as Finished<In, R> | TimedOut<In> | Recorded<In> | RecordFailed;
      if (typeof m !== 'object' || m === null) return undefined;
      if (m.kind === '$record-failed') return { stop: m.error instanceof Error ? m.error : new Error(String(m.error)) };
      if (m.kind === '$task-recorded') {
        m.task.recorded = true;
        releaseSlot(state, m.task, ctx);
        return undefined;
      }
      if (m.kind === '$task-timeout') {
        if (!m.task.reported && state.running.has(m.task))
          report(m.task, { status: 'timeout', error: m.task.controller.signal.reason }, ctx);
        return undefined;
      }
      if (m.kind !== '$task-finished' || !state.running.has(m.task)) return undefined;
      const { task } = m;
      task.returned = true;
      if (task.timer !== undefined) ctx.clock.clearTimeout(task.timer);
      // A task that timed out had its outcome reported then; its late result is not.
      if (!task.reported)
        report(task, m.status === 'success' ? { status: 'success', value: m.value as R } : { status: 'error', error: m.error }, ctx);
      releaseSlot(state, task, ctx);
      return undefined;
    },
    handleCancel(_info, subscription, state) {
      // Its settled count stays: tasks of the ended subscription still report when they finish.
      state.limits.delete(subscription.id);
      state.subscriptions.delete(subscription.id);
      state.freed.delete(subscription.id);
    },
    async terminate(reason, state) {
      // Stop taking work first: nothing new arrives while running tasks finish.
      const ctx = state.ctx;
      for (const subscription of state.subscriptions.values()) ctx?.cancel(subscription, 'shutdown');
      const queued = state.queued.splice(0);
      if (queued.length > 0 && options.onRelease !== undefined) {
        const onRelease = options.onRelease;
        const released = await Promise.resolve()
          .then(() => onRelease(queued.map((q) => q.event)))
          .then(
            () => true,
            () => false,
          );
        // Handed back to their owner, they are done here; unreleased ones stay unacknowledged for the next run.
        if (released && ctx !== undefined) for (const q of queued) settle(state, q.subscription, q.seq, ctx);
      }
      const drainMs = options.drainMs ?? 0;
      if (drainMs > 0 && isCleanExit(reason) && state.running.size > 0 && ctx !== undefined) {
        const { clock } = ctx;
        let timer: TimerHandle | undefined;
        const deadline = new Promise<undefined>((resolve) => {
          timer = clock.setTimeout(() => resolve(undefined), drainMs);
        });
        await Promise.all(
          [...state.running].map(async (task) => {
            const done = await Promise.race([task.settled, deadline]);
            if (done === undefined || !state.running.delete(task)) return;
            // A task whose timeout was reported already has its outcome on the way.
            if (task.reported) return;
            if (options.onOutcome !== undefined) {
              const outcome: TaskOutcome<In, R> = {
                event: task.event,
                status: done.status,
                durationMs: clock.now() - task.startedAt,
                ...(done.status === 'success' ? { value: done.value as R } : { error: done.error }),
              };
              const recorded = await Promise.resolve(options.onOutcome(outcome)).then(
                () => true,
                () => false,
              );
              if (!recorded) return;
            }
            settle(state, task.subscription, task.seq, ctx);
          }),
        );
        if (timer !== undefined) clock.clearTimeout(timer);
      }
      for (const task of state.running) {
        task.controller.abort(new FabricError('SF_STAGE_EXITED', 'the consumer running this task stopped'));
      }
    },
  });
}
