import { describeValue, FabricError } from '@stagefabric/runtime';
import { Cron } from 'croner';
import { checkTasks } from './task-input.js';
import type { EnqueueResult, NewTask } from './task-store.js';

/**
 * Recurring schedules: a cron expression in a time zone that enqueues a
 * task at each fire. Every scheduler (one per agent) looks at every
 * schedule; a fire enqueues its task only through the store's atomic step
 * that moves the schedule's last fire forward to that fire time, so each
 * fire enqueues exactly one task however many schedulers run.
 */
export interface ScheduleDefinition {
  /** Letters, digits, _ . - (at most 100). */
  readonly name: string;
  /** Five fields (minute first) or six (second first), as croner reads them: `0 9 * * MON-FRI`. */
  readonly cron: string;
  /** IANA time zone the expression is read in. Default UTC. */
  readonly tz?: string;
  /**
   * The task each fire enqueues. Without a `uniqueKey` of its own it gets
   * `schedule:NAME:FIRE-TIME-ISO`; with one, a fire while the previous
   * fire's task is still pending adds nothing (no overlapping runs).
   */
  readonly task: NewTask;
  /**
   * How many fires missed while no scheduler ran (every agent down) are
   * still enqueued on return, the latest ones. Default 0: missed fires are
   * skipped (logged and counted) and the schedule goes on from now.
   */
  readonly backfill?: number;
}

export interface ScheduleRecord {
  readonly name: string;
  readonly cron: string;
  readonly tz: string;
  readonly task: NewTask;
  readonly backfill: number;
  /** The latest fire handled (enqueued, or skipped as missed); null before the first. */
  readonly lastFireAt: Date | null;
  /** Fires are looked for after this when there was none yet. */
  readonly createdAt: Date;
}

/** What every task store keeps of schedules (part of the TaskStore contract). */
export interface ScheduleStore {
  /** Creates or replaces schedules by name, all or none; a replaced schedule keeps its last fire. */
  defineSchedules(schedules: readonly ScheduleDefinition[]): Promise<void>;
  /** Every schedule, by name. */
  schedules(): Promise<ScheduleRecord[]>;
  /** True when it existed. */
  removeSchedule(name: string): Promise<boolean>;
  /**
   * The atomic step of a fire: when the schedule's last fire is before
   * `fireAt`, moves it to `fireAt` and enqueues `task` (absent: the fire is
   * skipped) together; otherwise does nothing and returns null (another
   * scheduler handled this fire or a later one, or the schedule is gone).
   */
  fireSchedule(name: string, fireAt: Date, task?: NewTask): Promise<EnqueueResult | 'skipped' | null>;
}

/** A schedule refused: bad name, cron, time zone, backfill or task. */
export class ScheduleError extends FabricError {
  override readonly name = 'ScheduleError';

  constructor(message: string) {
    super('SF_BAD_SCHEDULE', message);
  }
}

export const SCHEDULE_DEFAULTS = {
  tz: 'UTC',
  backfill: 0,
  /** Largest backfill a schedule may ask for. */
  maxBackfill: 1000,
} as const;

const NAME = /^[A-Za-z0-9_.-]{1,100}$/;

/** A paused croner job: only its arithmetic is used, it never runs a timer. */
function cronOf(cron: string, tz: string): Cron {
  return new Cron(cron, { timezone: tz, paused: true });
}

/** Checks one schedule; the error names the schedule, the field and the rule. Returns it with its defaults. */
export function checkSchedule(input: ScheduleDefinition, where = 'schedule'): Required<ScheduleDefinition> {
  if (typeof input !== 'object' || input === null)
    throw new ScheduleError(`${where}: expected { name, cron, tz?, task, backfill? }, got ${describeValue(input)}`);
  const { name, cron, tz = SCHEDULE_DEFAULTS.tz, task, backfill = SCHEDULE_DEFAULTS.backfill } = input;
  if (typeof name !== 'string' || !NAME.test(name))
    throw new ScheduleError(`${where}: name = ${describeValue(name)}: must be 1 to 100 letters, digits, _ . -`);
  const at = `schedule ${name}`;
  if (typeof cron !== 'string' || cron.trim() === '')
    throw new ScheduleError(`${at}: cron = ${describeValue(cron)}: must be a cron expression`);
  if (typeof tz !== 'string' || tz === '')
    throw new ScheduleError(`${at}: tz = ${describeValue(tz)}: must be an IANA time zone such as Europe/Berlin`);
  try {
    // croner checks the time zone only when it computes a date.
    cronOf(cron, tz).nextRun(new Date(0));
  } catch (error) {
    const field = /time ?zone/i.test((error as Error).message) ? `tz = ${describeValue(tz)}` : `cron = ${describeValue(cron)}`;
    throw new ScheduleError(`${at}: ${field}: ${(error as Error).message}`);
  }
  if (!Number.isInteger(backfill) || backfill < 0 || backfill > SCHEDULE_DEFAULTS.maxBackfill)
    throw new ScheduleError(`${at}: backfill = ${describeValue(backfill)}: must be an integer from 0 to ${SCHEDULE_DEFAULTS.maxBackfill}`);
  if (typeof task === 'object' && task !== null && task.options?.runAt !== undefined)
    throw new ScheduleError(`${at}: task: option runAt: each fire sets when its task runs (use delayMs to run it later than the fire)`);
  try {
    checkTasks([task]);
  } catch (error) {
    throw new ScheduleError(`${at}: task: ${(error as Error).message.replace(/^task 0( \([^)]*\))?: /, '')}`);
  }
  return { name, cron, tz, task, backfill };
}

/** The task a fire enqueues: the schedule's, keyed by the fire time unless it brings a key of its own. */
export function taskForFire(schedule: Pick<ScheduleRecord, 'name' | 'task'>, fireAt: Date): NewTask {
  const options = schedule.task.options ?? {};
  return {
    ...schedule.task,
    options: { ...options, uniqueKey: options.uniqueKey ?? `schedule:${schedule.name}:${fireAt.toISOString()}` },
  };
}

/** The schedule's next fire after `after`, or null when its expression never fires again. */
export function nextFire(schedule: Pick<ScheduleRecord, 'cron' | 'tz'>, after: Date): Date | null {
  return cronOf(schedule.cron, schedule.tz).nextRun(after);
}

/** At most this many fire times are computed for a schedule per pass; a longer gap is caught up over several passes. */
export const FIRES_SCANNED_MAX = 50_000;

export interface FirePlan {
  /** Fires to skip before the first enqueued one: the pointer moves to `skipTo`. */
  readonly skipped: number;
  readonly skipTo: Date | null;
  /** Fires to enqueue, in order. */
  readonly fire: readonly Date[];
}

/**
 * What a scheduler does for a schedule at `now`: its fires after its last
 * one (or its creation) up to now, where a fire more than `missedAfterMs`
 * late counts as missed and only the latest `backfill` of those are still
 * enqueued. Pure: time comes in as arguments.
 */
export function planFires(schedule: ScheduleRecord, nowMs: number, missedAfterMs: number): FirePlan {
  const cron = cronOf(schedule.cron, schedule.tz);
  const missedBefore = nowMs - missedAfterMs;
  const late: Date[] = [];
  const timely: Date[] = [];
  let skipped = 0;
  let skipTo: Date | null = null;
  let cursor = schedule.lastFireAt ?? schedule.createdAt;
  for (let scanned = 0; scanned < FIRES_SCANNED_MAX; scanned++) {
    const next = cron.nextRun(cursor);
    if (next === null || next.getTime() > nowMs) return { skipped, skipTo, fire: [...late, ...timely] };
    if (next.getTime() < missedBefore) {
      late.push(next);
      if (late.length > schedule.backfill) {
        skipTo = late.shift() ?? null;
        skipped++;
      }
    } else timely.push(next);
    cursor = next;
  }
  // The gap is longer than one pass scans: whatever it found so far is not the latest, so it is all skipped
  // unless it reached fires that are not late.
  if (timely.length > 0) return { skipped, skipTo, fire: [...late, ...timely] };
  return { skipped: skipped + late.length, skipTo: late.at(-1) ?? skipTo, fire: [] };
}
