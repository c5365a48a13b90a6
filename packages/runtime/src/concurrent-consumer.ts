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
  readonly startedAt: number;
  readonly timeoutMs: number;
  /** Clock time its timeout falls due. */
  readonly deadline: number;
  /** Made only when its handler reads its signal: most never do, and each one costs an allocation the collector must trace. */
  controller: AbortController | undefined;
  /** Why it was aborted (timed out, or the stage stopped): kept for a signal asked for after the abort. */
  abortReason: unknown;
  /** How its handler ended, once it did (before the stage has handled that). */
  ended: Ended<unknown> | undefined;
  /** A drain waiting for its handler to end. */
  onEnded: ((ended: Ended<unknown>) => void) | undefined;
  /** Its outcome was reported: at its end, or at its timeout while the handler may still run. */
  reported: boolean;
  /** Its handler returned: its concurrency slot is free. */
  returned: boolean;
  /** Its outcome was recorded: once its handler returned too, its event is done and its demand asked for again. */
  recorded: boolean;
}

/** How a handler ended: returned (or threw). */
interface Ended<R> {
  readonly status: 'success' | 'error';
  readonly value?: R;
  readonly error?: unknown;
}

/**
 * Each one a message to the stage itself, sent only when its list goes from
 * empty to not: tasks that end, time out or are recorded together are
 * handled in one turn, not one message each.
 */
const TASKS_ENDED = '$tasks-ended';
const TASKS_TIMED_OUT = '$tasks-timed-out';
const TASKS_RECORDED = '$tasks-recorded';

/** Per subscription: which received events are done, so they are reported handled in the order they came. */
interface Settled {
  readonly subscription: Subscription;
  /** Sequence number of the next event received. */
  received: number;
  /** Events 0..done-1 are all done. */
  done: number;
  /** Of those, reported handled upstream: the rest are reported at the end of the turn, in one message. */
  reported: number;
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
  /** Handlers that ended, timed out and outcomes recorded since the stage last looked: each list bounded by the tasks in hand. */
  ended: Running<In>[];
  timedOut: Running<In>[];
  recorded: Running<In>[];
  /** The one timer for every running task's timeout, set for the earliest deadline. */
  deadlineTimer: TimerHandle | undefined;
  deadlineAt: number;
  /** The stage's context, kept for terminate, which gets none. */
  ctx: StageContext | undefined;
}

/** Aborts a task's signal, or, when none was asked for, keeps the reason for one asked for later. The first reason stays. */
function abortTask(task: Running<unknown>, reason: unknown): void {
  if (task.abortReason !== undefined) return;
  task.abortReason = reason;
  task.controller?.abort(reason);
}

/** What a handler gets beside its event: its signal is made when first read. */
class RunContext {
  readonly #task: Running<unknown>;
  constructor(task: Running<unknown>) {
    this.#task = task;
  }
  get signal(): AbortSignal {
    const task = this.#task;
    if (task.controller === undefined) {
      task.controller = new AbortController();
      if (task.abortReason !== undefined) task.controller.abort(task.abortReason);
    }
    return task.controller.signal;
  }
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

  const concurrency = options.concurrency ?? Number.POSITIVE_INFINITY;

  if (concurrency !== Number.POSITIVE_INFINITY && !isPositiveInteger(concurrency))
    throw badOption(where, 'concurrency', concurrency, 'must be a positive integer');

  /** Adds to one of the stage's own lists; the first entry rings its bell. */
  const notify = (list: Running<In>[], task: Running<In>, bell: string, ctx: StageContext) => {
    list.push(task);
    if (list.length === 1) ctx.send(ctx.self, bell);
  };

  /** A slot is free again: counted, and asked back at the end of the turn in batches of (max - min), like the demand of an automatic consumer. */
  const freeSlot = (state: ConcurrentConsumerState<In>, subscription: Subscription) => {
    if (!state.limits.has(subscription.id)) return;
    state.freed.set(subscription.id, (state.freed.get(subscription.id) ?? 0) + 1);
  };

  /**
   * An event is done (its task finished and its outcome recorded, or it was
   * handed back): the run of done events from the oldest not yet done grows,
   * so an event still running is never acknowledged upstream.
   */
  const settle = (state: ConcurrentConsumerState<In>, subscription: Subscription, seq: number) => {
    const s = state.settled.get(subscription.id);
    if (s === undefined) return;
    if (seq !== s.done) {
      s.ahead.add(seq);
      return;
    }
    s.done++;
    while (s.ahead.size > 0 && s.ahead.delete(s.done)) s.done++;
  };

  /** Reports the events done since the last report upstream: one message per subscription, not one per task. */
  const reportHandled = (state: ConcurrentConsumerState<In>, ctx: StageContext) => {
    for (const s of state.settled.values()) {
      if (s.done === s.reported) continue;
      ctx.handled(s.subscription, s.done - s.reported);
      s.reported = s.done;
    }
  };

  /** At the end of a turn: what was done is reported handled, then freed slots are asked for again. */
  const endTurn = (state: ConcurrentConsumerState<In>, ctx: StageContext) => {
    reportHandled(state, ctx);
    for (const [id, freed] of state.freed) {
      const limits = state.limits.get(id);
      const subscription = state.subscriptions.get(id);
      if (limits === undefined || subscription === undefined) continue;
      // One ask per (max - min) slots, as if each had been asked for as it was freed.
      const step = Math.max(1, limits.max - limits.min);
      let left = freed;
      for (; left >= step; left -= step) ctx.ask(subscription, step);
      if (left !== freed) state.freed.set(id, left);
    }
  };

  const clearDeadline = (state: ConcurrentConsumerState<In>, ctx: StageContext) => {
    if (state.deadlineTimer !== undefined) ctx.clock.clearTimeout(state.deadlineTimer);
    state.deadlineTimer = undefined;
    state.deadlineAt = Number.POSITIVE_INFINITY;
  };

  const armDeadline = (state: ConcurrentConsumerState<In>, at: number, ctx: StageContext) => {
    clearDeadline(state, ctx);
    state.deadlineAt = at;
    state.deadlineTimer = ctx.clock.setTimeout(() => expire(state, ctx), Math.max(0, at - ctx.clock.now()));
  };

  /**
   * The deadline timer fired: every running task past its deadline is aborted
   * at once (so it stops even while the stage is draining) and its timeout
   * reported by the stage; the timer is set again for the earliest deadline
   * left. One timer for all tasks instead of one each: a task that ends
   * before its deadline costs no timer at all.
   */
  const expire = (state: ConcurrentConsumerState<In>, ctx: StageContext) => {
    state.deadlineTimer = undefined;
    state.deadlineAt = Number.POSITIVE_INFINITY;
    const now = ctx.clock.now();
    let next = Number.POSITIVE_INFINITY;
    for (const task of state.running) {
      // Ended (its result on its way to the stage), timed out already, or aborted by a stop: no timeout to report.
      if (task.ended !== undefined || task.abortReason !== undefined) continue;
      if (task.deadline <= now) {
        abortTask(task, new FabricError('SF_TASK_TIMEOUT', `task timed out after ${task.timeoutMs} ms`));
        notify(state.timedOut, task, TASKS_TIMED_OUT, ctx);
      } else if (task.deadline < next) next = task.deadline;
    }
    if (next !== Number.POSITIVE_INFINITY) armDeadline(state, next, ctx);
  };

  /** The handler returned or threw: a drain waiting for it hears at once, the stage on its next turn. */
  const endTask = (state: ConcurrentConsumerState<In>, task: Running<In>, ended: Ended<unknown>, ctx: StageContext) => {
    task.ended = ended;
    const waiting = task.onEnded;
    if (waiting !== undefined) {
      task.onEnded = undefined;
      waiting(ended);
    }
    notify(state.ended, task, TASKS_ENDED, ctx);
  };

  const start = (state: ConcurrentConsumerState<In>, event: In, subscription: Subscription, seq: number, ctx: StageContext) => {
    const timeoutMs = timeoutOf(event);
    const startedAt = ctx.clock.now();
    const task: Running<In> = {
      event,
      subscription,
      seq,
      startedAt,
      timeoutMs,
      deadline: startedAt + timeoutMs,
      controller: undefined,
      abortReason: undefined,
      ended: undefined,
      onEnded: undefined,
      reported: false,
      returned: false,
      recorded: false,
    };
    state.running.add(task);
    if (task.deadline < state.deadlineAt) armDeadline(state, task.deadline, ctx);
    let result: R | Promise<R>;
    try {
      result = options.run(event, new RunContext(task));
    } catch (error) {
      endTask(state, task, { status: 'error', error }, ctx);
      return;
    }
    if (!isThenable(result)) {
      endTask(state, task, { status: 'success', value: result }, ctx);
      return;
    }
    (result instanceof Promise ? result : Promise.resolve(result)).then(
      (value) => endTask(state, task, { status: 'success', value }, ctx),
      (error: unknown) => endTask(state, task, { status: 'error', error }, ctx),
    );
  };

  /** Reports a task's outcome; its record, once done, comes back in the stage's `recorded` list. */
  const report = (state: ConcurrentConsumerState<In>, task: Running<In>, ended: Ended<unknown> | 'timeout', ctx: StageContext) => {
    task.reported = true;
    if (options.onOutcome === undefined) {
      task.recorded = true;
      return;
    }
    const durationMs = ctx.clock.now() - task.startedAt;
    const outcome: TaskOutcome<In, R> =
      ended === 'timeout'
        ? { event: task.event, status: 'timeout', error: task.abortReason, durationMs }
        : ended.status === 'success'
          ? { event: task.event, status: 'success', value: ended.value as R, durationMs }
          : { event: task.event, status: 'error', error: ended.error, durationMs };
    // Recorded concurrently, so outcomes finishing together can be stored together; the slot waits for its record.
    const failed = (error: unknown) => ctx.send(ctx.self, { kind: '$record-failed', error } satisfies RecordFailed);
    let recording: void | Promise<void>;
    try {
      recording = options.onOutcome(outcome);
    } catch (error) {
      failed(error);
      return;
    }
    if (isThenable(recording)) recording.then(() => notify(state.recorded, task, TASKS_RECORDED, ctx), failed);
    else notify(state.recorded, task, TASKS_RECORDED, ctx);
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
      else if (state.running.size === 0) clearDeadline(state, ctx);
    }
    if (task.recorded) {
      settle(state, task.subscription, task.seq);
      freeSlot(state, task.subscription);
    }
  };

  /** The handler's end, on the stage's turn. A task a drain took over is not the stage's any more. */
  const taskEnded = (state: ConcurrentConsumerState<In>, task: Running<In>, ctx: StageContext) => {
    if (!state.running.has(task) || task.ended === undefined) return;
    task.returned = true;
    // A task that timed out had its outcome reported then; its late result is not.
    if (!task.reported) report(state, task, task.ended, ctx);
    releaseSlot(state, task, ctx);
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
        ended: [],
        timedOut: [],
        recorded: [],
        deadlineTimer: undefined,
        deadlineAt: Number.POSITIVE_INFINITY,
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
      state.settled.set(subscription.id, { subscription, received: 0, done: 0, reported: 0, ahead: new Set() });
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
      if (message === TASKS_ENDED) {
        const ended = state.ended;
        state.ended = [];
        for (const task of ended) taskEnded(state, task, ctx);
        endTurn(state, ctx);
        return undefined;
      }
      if (message === TASKS_RECORDED) {
        const recorded = state.recorded;
        state.recorded = [];
        for (const task of recorded) {
          task.recorded = true;
          releaseSlot(state, task, ctx);
        }
        endTurn(state, ctx);
        return undefined;
      }
      if (message === TASKS_TIMED_OUT) {
        const timedOut = state.timedOut;
        state.timedOut = [];
        for (const task of timedOut) if (!task.reported && state.running.has(task)) report(state, task, 'timeout', ctx);
        return undefined;
      }
      const m = message as RecordFailed;
      if (typeof m === 'object' && m !== null && m.kind === '$record-failed')
        return { stop: m.error instanceof Error ? m.error : new Error(String(m.error)) };
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
        if (released && ctx !== undefined) {
          for (const q of queued) settle(state, q.subscription, q.seq);
          reportHandled(state, ctx);
        }
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
            const done = await Promise.race([endOf(task), deadline]);
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
            settle(state, task.subscription, task.seq);
            reportHandled(state, ctx);
          }),
        );
        if (timer !== undefined) clock.clearTimeout(timer);
      }
      const stopped = new FabricError('SF_STAGE_EXITED', 'the consumer running this task stopped');
      for (const task of state.running) abortTask(task, stopped);
      if (ctx !== undefined) clearDeadline(state, ctx);
    },
  });
}

/** Settles with how the task's handler ended: for a drain, which can no longer receive the stage's messages. */
function endOf(task: Running<unknown>): Promise<Ended<unknown>> {
  const { ended } = task;
  if (ended !== undefined) return Promise.resolve(ended);
  return new Promise((resolve) => {
    task.onEnded = resolve;
  });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null && (typeof value === 'object' || typeof value === 'function') && typeof (value as { then?: unknown }).then === 'function'
  );
}
