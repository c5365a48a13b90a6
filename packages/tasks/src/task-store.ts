import type { CancelRunningStore } from './cancel-running.js';
import type { RetentionStore } from './retention.js';
import type { ScheduleStore } from './schedules.js';
import type { StoredBackoff } from './task-backoff.js';
import type { TaskEventsStore } from './task-events.js';

/**
 * The contract every task store keeps (Postgres, embedded PGlite, Redis via
 * BullMQ). One conformance suite runs against each implementation.
 *
 * Lifecycle of a task: `waiting` -> `running` (claimed, with a lease) ->
 * `success` | `error` | `timeout`. A failed attempt with attempts left goes
 * back to `waiting` with a later `runAt` (backoff) and `lastError` set; the
 * final failed attempt leaves it in `error` or `timeout` for good. A running
 * task whose lease expired (its node died) is found by `recoverExpired` and
 * goes back to `waiting`, or to `error` when that was its last attempt.
 * `cancelled` is set by an operator.
 */
export type TaskState = 'waiting' | 'running' | 'success' | 'error' | 'timeout' | 'cancelled';

export const FINAL_STATES: readonly TaskState[] = ['success', 'error', 'timeout', 'cancelled'];

export interface EnqueueOptions {
  /** Default 'default'. */
  readonly queue?: string;
  /** When the task may first run. Default now. Exclusive with delayMs. */
  readonly runAt?: Date;
  readonly delayMs?: number;
  /** Lower runs first. Default 0. */
  readonly priority?: number;
  /** Default 5. */
  readonly maxAttempts?: number;
  /** Per-attempt timeout. Default 30 000 ms. */
  readonly timeoutMs?: number;
  /** While a task with this key is waiting or running, another with the same key is refused. */
  readonly uniqueKey?: string;
  /**
   * With uniqueKey: the key is held this long from enqueue, finished or
   * not (a task with it is refused until then), and while its task is
   * pending. Absent: held until the task finishes.
   */
  readonly uniqueForMs?: number;
  /** The key per-group limits count by within its queue (such as a customer id). Default none: only the queue's limits apply. */
  readonly group?: string;
  /**
   * How long this task waits after a failed attempt before the next, kept
   * with it: used instead of its handler's backoff (which is used instead of
   * the runner's exponential default). Fixed or exponential, as data.
   */
  readonly backoff?: StoredBackoff;
}

/** At most `max` claims (starts) of tasks in any window of `intervalMs`. */
export interface RateLimit {
  readonly max: number;
  readonly intervalMs: number;
}

/**
 * Limits on a queue that hold across every node of the fabric: the store
 * enforces them inside each claim, so they hold with any number of agents.
 * A claimed task counts as running from its claim until its outcome is
 * recorded (or it is released, or its lease is recovered); a start is a
 * claim.
 */
export interface QueueLimits {
  /** At most this many tasks of the queue running at once. */
  readonly concurrency?: number;
  /** At most `max` starts of the queue's tasks per `intervalMs`. */
  readonly rate?: RateLimit;
  /** The same per group (the task's `group` option); tasks without a group only count against the queue's limits. */
  readonly group?: {
    readonly concurrency?: number;
    readonly rate?: RateLimit;
    /**
     * Ordered processing: one task of a group at a time, in enqueue order.
     * A group's task runs only once every task of the group enqueued before
     * it is final, so a failed attempt waiting for its retry holds its group
     * back (priority orders tasks across groups, not within one).
     */
    readonly ordered?: boolean;
  };
}

export interface NewTask {
  /** The handler's name in the registry. Never code. */
  readonly name: string;
  readonly args?: unknown;
  readonly options?: EnqueueOptions;
}

export interface EnqueueResult {
  readonly id: string;
  /** True when a task with the same uniqueKey was pending, so nothing was added; `id` is that task's. */
  readonly duplicate: boolean;
}

/**
 * One claim of a task: the task, its attempt and its claimant. Plain data
 * (it crosses the wire with the task), so whichever node runs the task can
 * extend its lease and record its outcome; a store acts on a claim only
 * while it is current, so a stale run (an earlier attempt, a node that lost
 * the lease) can never finish, extend or reschedule a later one.
 */
export interface TaskClaim {
  readonly id: string;
  /** 1 on the first run. */
  readonly attempt: number;
  /**
   * Who holds the claim, as the store proves it: the lease owner on the SQL
   * stores; on BullMQ the job's lock token, which starts with the owner.
   * Opaque to everyone else.
   */
  readonly claimant: string;
}

export interface ClaimedTask extends TaskClaim {
  readonly queue: string;
  readonly name: string;
  readonly args: unknown;
  readonly maxAttempts: number;
  readonly timeoutMs: number;
  readonly enqueuedAt: Date;
  readonly leaseExpiresAt: Date;
  /** W3C traceparent of the span that enqueued it, when tracing recorded one: its run spans link to it. */
  readonly traceparent?: string;
  /** W3C traceparent of its first attempt's run span, once that attempt was retried: later attempts link to it. */
  readonly firstRunTraceparent?: string;
  /** Its own backoff, when it was enqueued with one: the runner uses it instead of the handler's. */
  readonly backoff?: StoredBackoff;
}

/** The outcome of one claim's run. */
export type TaskOutcomeRecord = TaskClaim &
  (
    | { readonly status: 'success' }
    /** `retryAt` set: back to waiting for another attempt; unset: failed for good. */
    | { readonly status: 'error' | 'timeout'; readonly error: string; readonly retryAt?: Date }
  ) & {
    /** How long the attempt ran, as its runner measured it; kept in the task's attempt history. */
    readonly durationMs?: number;
    /** This run's span (W3C traceparent), kept as the task's first run when none is kept yet, for later attempts' span links. */
    readonly firstRunTraceparent?: string;
  };

/** One finished attempt of a task, as its history keeps it. */
export interface TaskAttempt {
  /** The task's attempt number when it ran (an operator's retry starts the count again at 1). */
  readonly attempt: number;
  /** `lost`: its lease expired (its node stopped or stalled) before it recorded an outcome. */
  readonly outcome: 'success' | 'error' | 'timeout' | 'lost';
  readonly error: string | null;
  /** Null when the runner did not say (a lost lease, a success recorded inside the handler's transaction). */
  readonly durationMs: number | null;
  /** The lease owner that ran it (node/nonce). */
  readonly owner: string | null;
  readonly finishedAt: Date;
}

/** Which tasks an operator means: every given field must match. */
export interface TaskFilter {
  readonly queue?: string;
  readonly state?: TaskState;
  /** The handler's name, exactly. */
  readonly name?: string;
  /** Text the last error contains, case-insensitively. */
  readonly errorContains?: string;
}

export interface TaskListFilter extends TaskFilter {
  /** Default 100. */
  readonly limit?: number;
  /** Tasks to skip, newest first, for paging. Default 0. */
  readonly offset?: number;
}

/** States `retry` and `retryWhere` change: failed or cancelled. */
export const RETRYABLE_STATES: readonly TaskState[] = ['error', 'timeout', 'cancelled'];

export interface TaskRecord {
  readonly id: string;
  readonly queue: string;
  readonly name: string;
  readonly args: unknown;
  readonly state: TaskState;
  readonly priority: number;
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly timeoutMs: number;
  readonly runAt: Date;
  readonly uniqueKey: string | null;
  readonly leaseOwner: string | null;
  readonly leaseExpiresAt: Date | null;
  readonly lastError: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly finishedAt: Date | null;
  /** What its handler last reported through `ctx.progress` (kept after it finished; cleared by an operator's retry), or null. */
  readonly progress: TaskProgress | null;
  /** Its own backoff, when it was enqueued with one. */
  readonly backoff?: StoredBackoff;
}

/** A handler's progress: a percentage from 0 to 100, or a JSON object of its own (at most 4 KiB as JSON). */
export type TaskProgress = number | Readonly<Record<string, unknown>>;

export interface TaskCount {
  readonly queue: string;
  readonly state: TaskState;
  readonly count: number;
}

/** What `claimLookingAhead` answers. */
export interface ClaimBatch {
  readonly tasks: ClaimedTask[];
  /** The earliest runAt of a task still waiting, null when none is; undefined when not looked for. */
  readonly nextRunAt?: Date | null;
}

/** Schedules, retention, cancelling running tasks and events are part of the contract: see schedules.ts, retention.ts, cancel-running.ts, task-events.ts. */
export interface TaskStore extends ScheduleStore, RetentionStore, CancelRunningStore, TaskEventsStore {
  /** Creates or upgrades the schema; safe to call from many agents at once. */
  migrate(): Promise<void>;
  /** Adds tasks in one round trip; all or nothing. */
  enqueue(tasks: readonly NewTask[]): Promise<EnqueueResult[]>;
  /** Claims up to `limit` due waiting tasks of `queue` for `owner`, by priority then runAt, in one round trip. */
  claim(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimedTask[]>;
  /**
   * Optional: `claim`, and when it takes fewer than `limit` the earliest
   * runAt of a task still waiting in `queue` (what `nextRunAt` answers), in
   * the same round trip. `nextRunAt` is undefined where the store did not
   * look (a full claim, or a queue it claims otherwise): the producer then
   * asks `nextRunAt` itself.
   */
  claimLookingAhead?(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimBatch>;
  /**
   * Takes over claims another node made (its producer claimed, this node's
   * runner will run): each claim still current passes to `holder` with a
   * fresh lease, so the holder's node is the one that hands it back on a
   * graceful stop. Returns the claims now held, in input order, leaving out
   * those no longer current; a claim `holder` already holds comes back as it
   * is, without a round trip.
   */
  adopt(claims: readonly TaskClaim[], holder: string, leaseMs: number): Promise<TaskClaim[]>;
  /** Records outcomes in one round trip. Only a task whose claim is still current changes; returns the ids that did. */
  complete(outcomes: readonly TaskOutcomeRecord[]): Promise<string[]>;
  /** Records a running task's progress while its claim is current; false when it is not. Bad progress is refused with SF_BAD_OPTION. */
  progress(claim: TaskClaim, progress: TaskProgress): Promise<boolean>;
  /** Extends the leases of claims still current; returns their ids. */
  extendLeases(claims: readonly TaskClaim[], leaseMs: number): Promise<string[]>;
  /** Claimed tasks that never started go back to waiting, their attempt not counted, if their claims are still current; returns the ids that did. */
  release(claims: readonly TaskClaim[]): Promise<string[]>;
  /**
   * Every task `holder` still holds goes back to waiting, its attempt not
   * counted: what a stopping node hands back once its stages have exited
   * (claimed and never handed to a runner, delivered and never started,
   * aborted at the end of the drain). Tasks a runner on another node took
   * over are that node's, not this one's. Returns the ids that did.
   */
  releaseHeld(holder: string): Promise<string[]>;
  /** Puts running tasks whose lease expired back to waiting, or fails them for good when that was their last attempt; returns how many. */
  recoverExpired(): Promise<number>;
  /** The earliest runAt of a waiting task in `queue`, or null. */
  nextRunAt(queue: string): Promise<Date | null>;
  /** Calls `listener` soon after tasks are enqueued in `queue`; returns an unsubscribe function. */
  onEnqueued(queue: string, listener: () => void): Promise<() => Promise<void>>;
  counts(): Promise<TaskCount[]>;
  /** Tasks matching the filter, newest first. */
  list(filter: TaskListFilter): Promise<TaskRecord[]>;
  get(id: string): Promise<TaskRecord | null>;
  /** A task's finished attempts, oldest first (a bounded number of the latest). */
  attempts(id: string): Promise<TaskAttempt[]>;
  /** Failed or cancelled tasks back to waiting, attempts reset; returns the ids changed. */
  retry(ids: readonly string[]): Promise<string[]>;
  /** Waiting tasks to cancelled; returns the ids changed. */
  cancel(ids: readonly string[]): Promise<string[]>;
  /** How many tasks match the filter. */
  countWhere(filter: TaskFilter): Promise<number>;
  /** `retry` for every failed or cancelled task matching the filter; returns how many changed. */
  retryWhere(filter: TaskFilter): Promise<number>;
  /** `cancel` for every waiting task matching the filter; returns how many changed. */
  cancelWhere(filter: TaskFilter): Promise<number>;
  /** Claims of `queue` return nothing until it is resumed; tasks already claimed run on. Idempotent. */
  pause(queue: string): Promise<void>;
  /** Claims of `queue` go on; producers waiting on it are woken. Idempotent. */
  resume(queue: string): Promise<void>;
  /** The queues paused now, sorted. */
  paused(): Promise<string[]>;
  /** Sets (replaces) the limits of `queue` for every node; null or `{}` lifts them. Bad limits are refused with SF_BAD_OPTION. */
  setLimits(queue: string, limits: QueueLimits | null): Promise<void>;
  /** The limits of `queue` now, or null when it has none. */
  limits(queue: string): Promise<QueueLimits | null>;
  close(): Promise<void>;
}
