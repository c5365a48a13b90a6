import { type Clock, FabricError, systemClock } from '@stagefabric/runtime';
import { startPeriodicPasses } from './periodic-passes.js';
import { planFires, type ScheduleRecord, taskForFire } from './schedules.js';
import type { EnqueueResult, TaskStore } from './task-store.js';

export interface TaskSchedulerOptions {
  readonly store: TaskStore;
  /** Default the system clock; tests drive a FakeClock. */
  readonly clock?: Clock;
  /** Time between passes over the schedules. Default 1000 ms. */
  readonly intervalMs?: number;
  /** A fire this late counts as missed (no scheduler ran at its time): enqueued only within its schedule's backfill. Default 60 000 ms. */
  readonly missedAfterMs?: number;
  /** A fire this scheduler enqueued (`duplicate`: its task's uniqueKey was still held, so nothing was added). */
  readonly onFired?: (schedule: ScheduleRecord, fireAt: Date, result: EnqueueResult) => void;
  /** Missed fires this scheduler skipped, beyond the schedule's backfill; `upTo` is the latest. */
  readonly onSkipped?: (schedule: ScheduleRecord, count: number, upTo: Date) => void;
  /** A pass that failed (the store could not be reached); the next pass tries again. */
  readonly onError?: (error: Error) => void;
}

export const TASK_SCHEDULER_DEFAULTS = {
  intervalMs: 1000,
  missedAfterMs: 60_000,
} as const;

export interface TaskScheduler {
  /** One pass now: every schedule's due fires. Passes never overlap. */
  tick(): Promise<void>;
  /** Stops the passes and waits for the one running. Idempotent. */
  stop(): Promise<void>;
}

function checkMs(option: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min || value > 2_147_483_647)
    throw new FabricError('SF_BAD_OPTION', `task scheduler option ${option} = ${value}: must be an integer of milliseconds >= ${min}`);
  return value;
}

/**
 * Fires the store's schedules: each pass reads every schedule and, for each
 * fire due since its last one, takes the store's atomic fire step. Any
 * number of schedulers may run on the same store (one per agent): a fire
 * another already took is a no-op here, so each fire enqueues one task.
 */
export function startTaskScheduler(options: TaskSchedulerOptions): TaskScheduler {
  const { store } = options;
  const clock = options.clock ?? systemClock;
  const intervalMs = checkMs('intervalMs', options.intervalMs ?? TASK_SCHEDULER_DEFAULTS.intervalMs, 10);
  const missedAfterMs = checkMs('missedAfterMs', options.missedAfterMs ?? TASK_SCHEDULER_DEFAULTS.missedAfterMs, 0);
  const runSchedule = async (schedule: ScheduleRecord, nowMs: number) => {
    const plan = planFires(schedule, nowMs, missedAfterMs);
    if (plan.skipTo !== null && (await store.fireSchedule(schedule.name, plan.skipTo)) === 'skipped')
      options.onSkipped?.(schedule, plan.skipped, plan.skipTo);
    for (const fireAt of plan.fire) {
      const result = await store.fireSchedule(schedule.name, fireAt, taskForFire(schedule, fireAt));
      if (result !== null && result !== 'skipped') options.onFired?.(schedule, fireAt, result);
    }
  };

  const pass = async () => {
    try {
      const nowMs = clock.now();
      for (const schedule of await store.schedules()) {
        if (passes.stopped) return;
        await runSchedule(schedule, nowMs);
      }
    } catch (error) {
      options.onError?.(error as Error);
    }
  };
  const passes = startPeriodicPasses(pass, intervalMs, clock);
  return { tick: passes.run, stop: passes.stop };
}
