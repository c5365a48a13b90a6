import {
  backoffMs,
  type ConcurrentConsumerState,
  type ConsumerSpec,
  concurrentConsumer,
  FabricError,
  type StageAddress,
  type SubscribeOptions,
  type TaskOutcome,
} from '@stagefabric/runtime';
import { type Query, SqlTaskStore } from './sql-task-store.js';
import type { TaskRegistry } from './task-registry.js';
import type { ClaimedTask, TaskOutcomeRecord, TaskStore } from './task-store.js';

export interface BackoffOptions {
  /** First retry waits up to this. Default 1000 ms. */
  readonly baseMs?: number;
  /** No retry waits longer. Default 300 000 ms. */
  readonly maxMs?: number;
}

export interface TaskRunnerOptions {
  readonly store: TaskStore;
  readonly registry: TaskRegistry;
  /** The same owner the producer claimed with. */
  readonly owner: string;
  /** Lease length; running tasks' leases are extended every third of it. Default 30 000 ms. */
  readonly leaseMs?: number;
  readonly subscribeTo: readonly (StageAddress | SubscribeOptions)[];
  /** Most tasks running at once; the subscription's maxDemand beyond it is prefetch. Default: maxDemand. */
  readonly concurrency?: number;
  /** On a graceful stop, how long running tasks may finish before they are aborted (their leases then lapse). Default 30 000 ms. */
  readonly drainMs?: number;
  readonly backoff?: BackoffOptions;
  /** Outcomes are written together once this many are ready... Default 100. */
  readonly flushSize?: number;
  /** ...or once the oldest has waited this long. Default 5 ms. */
  readonly flushMs?: number;
  /** Every task as it starts, for metrics. */
  readonly onStarted?: (task: ClaimedTask) => void;
  /** Every recorded outcome, for metrics and logs. */
  readonly onRecorded?: (task: ClaimedTask, outcome: TaskOutcomeRecord, durationMs: number) => void;
  readonly onError?: (error: Error) => void;
}

export const TASK_RUNNER_DEFAULTS = {
  drainMs: 30_000,
  leaseMs: 30_000,
  backoffBaseMs: 1000,
  backoffMaxMs: 300_000,
  flushSize: 100,
  flushMs: 1,
} as const;

/** Exponential backoff with full jitter: a random wait up to base * 2^(attempt - 1), capped. */
export function backoffDelayMs(attempt: number, backoff: BackoffOptions = {}, random: () => number = Math.random): number {
  const baseMs = backoff.baseMs ?? TASK_RUNNER_DEFAULTS.backoffBaseMs;
  const maxMs = backoff.maxMs ?? TASK_RUNNER_DEFAULTS.backoffMaxMs;
  return backoffMs(attempt - 1, { baseMs, maxMs }, random);
}

function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return typeof error === 'string' ? error : (JSON.stringify(error) ?? String(error));
}

/**
 * Runs claimed tasks by name, each with its own timeout and AbortSignal, at
 * most maxDemand at once (the runtime's concurrent consumer), and records
 * outcomes in batches. A slot is asked for again only once its outcome is
 * stored. Failures retry with backoff until their attempts run out.
 */
export function taskRunner(options: TaskRunnerOptions): ConsumerSpec<ConcurrentConsumerState<ClaimedTask>, ClaimedTask, void> {
  const leaseMs = options.leaseMs ?? TASK_RUNNER_DEFAULTS.leaseMs;
  const flushSize = options.flushSize ?? TASK_RUNNER_DEFAULTS.flushSize;
  const flushMs = options.flushMs ?? TASK_RUNNER_DEFAULTS.flushMs;
  const { store, registry, owner } = options;
  const running = new Set<string>();
  let batch: { record: TaskOutcomeRecord; done: () => void; failed: (e: Error) => void }[] = [];
  let flushTimer: NodeJS.Timeout | undefined;
  let leaseTimer: NodeJS.Timeout | undefined;

  const flush = () => {
    if (flushTimer !== undefined) clearTimeout(flushTimer);
    flushTimer = undefined;
    const taken = batch;
    batch = [];
    if (taken.length === 0) return;
    store
      .complete(
        taken.map((t) => t.record),
        owner,
      )
      .then(
        () => {
          for (const t of taken) t.done();
        },
        (error: Error) => {
          for (const t of taken) t.failed(error);
        },
      );
  };

  /** Stores one outcome; resolves once it is written. Retries the write while the store is down. */
  const record = async (outcome: TaskOutcomeRecord): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      try {
        await new Promise<void>((done, failed) => {
          batch.push({ record: outcome, done, failed });
          if (batch.length >= flushSize) flush();
          else flushTimer ??= setTimeout(flush, flushMs);
        });
        return;
      } catch (error) {
        options.onError?.(error as Error);
        await new Promise((r) => setTimeout(r, backoffMs(attempt, { baseMs: 100, maxMs: 5000 })));
      }
    }
  };

  const spec = concurrentConsumer<ClaimedTask, unknown>({
    subscribeTo: options.subscribeTo,
    ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
    drainMs: options.drainMs ?? TASK_RUNNER_DEFAULTS.drainMs,
    // Prefetched tasks that never started go straight back to waiting, for another node.
    async onRelease(tasks) {
      for (const t of tasks) running.delete(t.id);
      await store.release(
        tasks.map((t) => t.id),
        owner,
      );
    },
    timeoutMs: (task) => task.timeoutMs,
    run(task, { signal }) {
      options.onStarted?.(task);
      const handler = registry.get(task.name);
      if (handler === undefined) {
        throw new FabricError(
          'SF_NO_HANDLER',
          `no handler registered for task "${task.name}" (registered: ${registry.names().join(', ') || 'none'})`,
        );
      }
      const within = store instanceof SqlTaskStore ? store : undefined;
      return handler(task.args, {
        signal,
        task,
        ...(within === undefined ? {} : { succeedWith: (query: Query) => within.succeedWith(query, task, owner) }),
      });
    },
    async onOutcome(outcome: TaskOutcome<ClaimedTask, unknown>) {
      const task = outcome.event;
      running.delete(task.id);
      let result: TaskOutcomeRecord;
      const { durationMs } = outcome;
      if (outcome.status === 'success') result = { id: task.id, status: 'success', durationMs };
      else {
        const error = outcome.status === 'timeout' ? `timed out after ${task.timeoutMs} ms` : errorText(outcome.error);
        const retry = task.attempt < task.maxAttempts;
        result = retry
          ? {
              id: task.id,
              status: outcome.status,
              error,
              retryAt: new Date(Date.now() + backoffDelayMs(task.attempt, options.backoff)),
              durationMs,
            }
          : { id: task.id, status: outcome.status, error, durationMs };
      }
      await record(result);
      options.onRecorded?.(task, result, outcome.durationMs);
    },
  });

  return {
    ...spec,
    // Every task in hand keeps its lease, running or waiting for a slot.
    handleEvents(events, from, state, ctx) {
      for (const task of events) running.add(task.id);
      return spec.handleEvents(events, from, state, ctx);
    },
    async init(args, ctx) {
      // Running tasks keep their leases while they run; a node that dies stops extending them.
      leaseTimer = setInterval(
        () => {
          if (running.size === 0) return;
          store.extendLeases([...running], owner, leaseMs).catch((error: Error) => options.onError?.(error));
        },
        Math.max(10, Math.floor(leaseMs / 3)),
      );
      leaseTimer.unref();
      return spec.init(args, ctx);
    },
    async terminate(reason, state) {
      // Leases stay extended while running tasks drain; their outcomes are written before this returns.
      await spec.terminate?.(reason, state);
      if (leaseTimer !== undefined) clearInterval(leaseTimer);
      flush();
    },
  };
}
