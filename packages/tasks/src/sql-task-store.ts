import { randomUUID } from 'node:crypto';
import { FabricError, isTraceparent } from '@stagefabric/runtime';
import { FINISHED_STATES, type PruneCount, type RetentionPolicy } from './retention.js';
import { checkSchedule, type ScheduleDefinition, type ScheduleRecord } from './schedules.js';
import type { StoredBackoff } from './task-backoff.js';
import type { TaskEvent, TaskEventsOptions, TaskEventsOverflow } from './task-events.js';
import { encodeEvent, followEvents, leaseLostEvent } from './task-events.js';
import { type CheckedTask, checkLimits, checkProgress, checkTasks, TASK_DEFAULTS } from './task-input.js';
import * as sql from './task-sql.js';
import type {
  ClaimBatch,
  ClaimedTask,
  EnqueueResult,
  NewTask,
  QueueLimits,
  TaskAttempt,
  TaskClaim,
  TaskCount,
  TaskFilter,
  TaskListFilter,
  TaskOutcomeRecord,
  TaskProgress,
  TaskRecord,
  TaskState,
  TaskStore,
} from './task-store.js';
import { tracedEnqueue, traceFields } from './task-tracing.js';

export type Query = <R = Record<string, unknown>>(text: string, params?: readonly unknown[]) => Promise<R[]>;

/** What a SQL task store needs from a database connection: Postgres through `pg`, or PGlite. */
export interface SqlDriver {
  readonly query: Query;
  transaction<T>(fn: (query: Query) => Promise<T>): Promise<T>;
  /** LISTEN on a channel; the returned function stops listening. */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface SqlTaskStoreOptions {
  /** Default 'stagefabric'. */
  readonly schema?: string;
  readonly maxPayloadBytes?: number;
  /** Called on a background failure (the LISTEN connection dropped: it reconnects by itself; an events follower's renewal failed). */
  readonly onError?: (error: Error) => void;
  /** How long an events follower counts as following after its last renewal; it renews three times as often. Default 30 000. */
  readonly followerTtlMs?: number;
}

/** A task whose uniqueKey is held for a window from enqueue. */
const windowed = (t: NewTask): boolean => t?.options?.uniqueForMs !== undefined;
interface ClaimRow {
  id: string;
  queue: string;
  name: string;
  args: unknown;
  attempt: number;
  max_attempts: number;
  timeout_ms: number;
  created_at: Date;
  lease_expires_at: Date;
  priority: number;
  run_at: Date;
  traceparent: string | null;
  first_run_traceparent: string | null;
  backoff: StoredBackoff | null;
}

interface CancelledRow {
  id: string;
  queue: string;
  name: string;
  attempt: number;
}

/** A bulk change's rows: per queue, how many and which. */
interface GroupedRow {
  queue: string;
  count: number;
  ids: string[];
  names: string[];
}

interface LimitsRow {
  concurrency: number | null;
  rate_max: number | null;
  rate_interval_ms: number | null;
  group_concurrency: number | null;
  group_rate_max: number | null;
  group_rate_interval_ms: number | null;
  group_ordered: boolean;
}

/** A claim statement's rows as claimed tasks, in claim order (UPDATE ... RETURNING does not keep it). */
function toClaimed(rows: ClaimRow[], owner: string): ClaimedTask[] {
  // Each row's keys read once, not per comparison.
  const keyed = rows.map((r) => ({ r, runAt: new Date(r.run_at).getTime(), id: Number(r.id) }));
  keyed.sort((a, b) => a.r.priority - b.r.priority || a.runAt - b.runAt || a.id - b.id);
  return keyed.map(({ r }) => {
    const task: ClaimedTask = {
      id: r.id,
      queue: r.queue,
      name: r.name,
      args: r.args,
      attempt: r.attempt,
      claimant: owner,
      maxAttempts: r.max_attempts,
      timeoutMs: r.timeout_ms,
      enqueuedAt: new Date(r.created_at),
      leaseExpiresAt: new Date(r.lease_expires_at),
    };
    // Optional fields only when present, and not spread in: a spread into this literal takes V8's slow path on every task.
    if (r.traceparent !== null || r.first_run_traceparent !== null)
      Object.assign(task, traceFields(r.traceparent, r.first_run_traceparent));
    if (r.backoff !== null) Object.assign(task, { backoff: r.backoff });
    return task;
  });
}

/** A task's page shows this many of its latest attempts at most. */
const ATTEMPTS_SHOWN = 100;

interface TaskRow {
  id: string;
  queue: string;
  name: string;
  args: unknown;
  state: TaskState;
  priority: number;
  attempt: number;
  max_attempts: number;
  timeout_ms: number;
  run_at: Date;
  unique_key: string | null;
  lease_owner: string | null;
  lease_expires_at: Date | null;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
  progress: TaskProgress | null;
  backoff: StoredBackoff | null;
}

const toRecord = (r: TaskRow): TaskRecord => ({
  id: r.id,
  queue: r.queue,
  name: r.name,
  args: r.args,
  state: r.state,
  priority: r.priority,
  attempt: r.attempt,
  maxAttempts: r.max_attempts,
  timeoutMs: r.timeout_ms,
  runAt: new Date(r.run_at),
  uniqueKey: r.unique_key,
  leaseOwner: r.lease_owner,
  leaseExpiresAt: r.lease_expires_at === null ? null : new Date(r.lease_expires_at),
  lastError: r.last_error,
  createdAt: new Date(r.created_at),
  updatedAt: new Date(r.updated_at),
  finishedAt: r.finished_at === null ? null : new Date(r.finished_at),
  progress: r.progress ?? null,
  ...(r.backoff == null ? {} : { backoff: r.backoff }),
});

/** A claim this store could have made: a row id and an integer attempt (a claim from the wire may be anything). */
const wellFormed = (c: TaskClaim): boolean =>
  /^\d{1,19}$/.test(c.id) && Number.isInteger(c.attempt) && c.attempt >= 0 && c.attempt <= 2 ** 31 - 1;

/** Claims as the three arrays the statements unnest. */
function claimArrays(claims: readonly TaskClaim[]): [string[], number[], string[]] {
  return [claims.map((c) => c.id), claims.map((c) => c.attempt), claims.map((c) => c.claimant)];
}

/**
 * The task store on SQL: every operation one statement (or one short
 * transaction), claims with FOR UPDATE SKIP LOCKED, outcomes in batches,
 * NOTIFY on enqueue. The same code serves Postgres and PGlite.
 */
export class SqlTaskStore implements TaskStore {
  private readonly schema: string;
  private readonly channel: string;
  /** Lifecycle events, one NOTIFY each (see task-events.ts). */
  private readonly eventsChannel: string;
  private readonly maxPayloadBytes: number;
  private readonly onError: (error: Error) => void;
  private readonly followerTtlMs: number;
  /**
   * Queues this store found limited: their claims take the queue's lock.
   * Only a routing hint: the plain claim never takes a limited queue's
   * tasks, and the locked claim falls back to it once limits are lifted.
   */
  private readonly limitedQueues = new Set<string>();

  constructor(
    private readonly driver: SqlDriver,
    options: SqlTaskStoreOptions = {},
  ) {
    this.schema = options.schema ?? 'stagefabric';
    sql.quoteSchema(this.schema);
    this.channel = `${this.schema}_enqueued`;
    this.eventsChannel = `${this.schema}_events`;
    this.maxPayloadBytes = options.maxPayloadBytes ?? TASK_DEFAULTS.maxPayloadBytes;
    this.onError = options.onError ?? (() => {});
    this.followerTtlMs = options.followerTtlMs ?? 30_000;
    if (!Number.isInteger(this.followerTtlMs) || this.followerTtlMs < 30)
      throw new FabricError(
        'SF_BAD_OPTION',
        `task store: option followerTtlMs must be an integer of at least 30 (ms), got ${this.followerTtlMs}`,
      );
  }

  /** Statements with this store's schema in them, made once each: the task-sql.ts statements, a bounded set. */
  private readonly statements = new Map<string, string>();

  private s(text: string): string {
    let statement = this.statements.get(text);
    if (statement === undefined) {
      statement = sql.inSchema(text, this.schema);
      this.statements.set(text, statement);
    }
    return statement;
  }

  async migrate(): Promise<void> {
    await this.driver.transaction(async (query) => {
      // Agents starting together wait for each other here instead of racing to create the table.
      await query(sql.LOCK, [`stagefabric:${this.schema}`]);
      for (const statement of this.s(sql.PREPARE)
        .split(';')
        .filter((x) => x.trim() !== ''))
        await query(statement);
      const [{ version } = { version: 0 }] = await query<{ version: number }>(this.s(sql.APPLIED));
      for (let v = version; v < sql.MIGRATIONS.length; v++) {
        for (const statement of this.s(sql.MIGRATIONS[v] as string)
          .split(';')
          .filter((x) => x.trim() !== ''))
          await query(statement);
        await query(this.s(sql.RECORD), [v + 1]);
      }
    });
  }

  enqueue(tasks: readonly NewTask[]): Promise<EnqueueResult[]> {
    // Keys held for a window take a few statements: one transaction.
    if (tasks.some(windowed)) return this.driver.transaction((query) => this.enqueueWith(query, tasks));
    // One statement: atomic on its own, no transaction round trips.
    return this.enqueueWith(this.driver.query, tasks);
  }

  /** Enqueue on a query function of the caller's: inside their transaction, the tasks exist only if it commits. */
  async enqueueWith(query: Query, tasks: readonly NewTask[]): Promise<EnqueueResult[]> {
    if (tasks.some(windowed)) return this.enqueueWindowed(query, tasks);
    const checked = checkTasks(tasks, this.maxPayloadBytes);
    if (checked.length === 0) return [];
    // One task's values as they are, a batch's as one array per column (ENQUEUE_ONE, ENQUEUE).
    const column: <T>(value: (t: CheckedTask) => T) => T | T[] =
      checked.length === 1 ? (value) => value(checked[0] as CheckedTask) : (value) => checked.map(value);
    const rows = await tracedEnqueue(checked, (traceparent) =>
      query<{ id: string; queue: string; duplicate: boolean; existing_id: string | null }>(
        this.s(checked.length === 1 ? sql.ENQUEUE_ONE : sql.ENQUEUE),
        [
          column((t) => t.queue),
          column((t) => t.name),
          column((t) => t.args),
          column((t) => t.priority),
          column((t) => t.maxAttempts),
          column((t) => t.timeoutMs),
          column((t) => t.runAt.toISOString()),
          column((t) => t.uniqueKey),
          this.channel,
          column(() => traceparent ?? null),
          column((t) => t.group),
          column((t) => (t.backoff === null ? null : JSON.stringify(t.backoff))),
          this.eventsChannel,
        ],
      ),
    );
    // A duplicate of a task earlier in this same batch is not visible to the statement's own lookup: resolve it here.
    const inBatch = new Map<string, string>();
    checked.forEach((t, i) => {
      const row = rows[i];
      if (t.uniqueKey !== null && row !== undefined && !row.duplicate) inBatch.set(`${t.queue}\u0000${t.uniqueKey}`, row.id);
    });
    return rows.map((r, i) => {
      if (!r.duplicate) return { id: r.id, duplicate: false };
      const t = checked[i] as (typeof checked)[number];
      return { id: r.existing_id ?? inBatch.get(`${t.queue}\u0000${t.uniqueKey}`) ?? r.id, duplicate: true };
    });
  }

  /**
   * Tasks whose uniqueKey is held for a window (uniqueForMs): each takes
   * its key's window first, and one whose window is still held by another
   * task is a duplicate of that task; the rest are enqueued as usual.
   */
  private async enqueueWindowed(query: Query, tasks: readonly NewTask[]): Promise<EnqueueResult[]> {
    const checked = checkTasks(tasks, this.maxPayloadBytes);
    const keyOf = (t: { queue: string; uniqueKey: string | null }) => `${t.queue}\u0000${t.uniqueKey}`;
    // A key twice in the batch: the first asks for the window, the later ones are its duplicates.
    const asking = new Map<string, (typeof checked)[number]>();
    for (const t of checked) if (t.uniqueForMs !== null && !asking.has(keyOf(t))) asking.set(keyOf(t), t);
    const wanted = [...asking.values()];
    const taken = new Set(
      (
        await query<{ queue: string; unique_key: string }>(this.s(sql.TAKE_WINDOWS), [
          wanted.map((t) => t.queue),
          wanted.map((t) => t.uniqueKey),
          wanted.map((t) => t.uniqueForMs),
        ])
      ).map((r) => `${r.queue}\u0000${r.unique_key}`),
    );
    const first = new Set<string>();
    const goes = checked.map((t) => {
      if (t.uniqueForMs === null) return true;
      const k = keyOf(t);
      if (!taken.has(k) || first.has(k)) return false;
      first.add(k);
      return true;
    });
    const unwindowed = (task: NewTask): NewTask => {
      const { uniqueForMs: _held, ...options } = task.options ?? {};
      return { ...task, options };
    };
    const inserted = await this.enqueueWith(query, tasks.filter((_, i) => goes[i]).map(unwindowed));
    const idOf = new Map<string, string>();
    let n = 0;
    checked.forEach((t, i) => {
      if (!goes[i]) return;
      const result = inserted[n++] as EnqueueResult;
      if (t.uniqueForMs !== null) idOf.set(keyOf(t), result.id);
    });
    const held = [...idOf].map(([k, id]) => [...(k.split('\u0000') as [string, string]), id] as const);
    if (held.length > 0) await query(this.s(sql.HOLD_WINDOWS), [held.map((h) => h[0]), held.map((h) => h[1]), held.map((h) => h[2])]);
    const refused = checked.filter((t, i) => !goes[i] && !idOf.has(keyOf(t)));
    if (refused.length > 0) {
      const holders = await query<{ queue: string; unique_key: string; task_id: string | null }>(this.s(sql.WINDOW_HOLDERS), [
        refused.map((t) => t.queue),
        refused.map((t) => t.uniqueKey),
      ]);
      for (const h of holders) if (h.task_id !== null) idOf.set(`${h.queue}\u0000${h.unique_key}`, h.task_id);
    }
    n = 0;
    return checked.map((t, i) => {
      if (goes[i]) return inserted[n++] as EnqueueResult;
      return { id: idOf.get(keyOf(t)) ?? '', duplicate: true };
    });
  }

  /** Its `started` events are sent by the claim statement itself (STARTED_EVENTS). */
  async claim(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimedTask[]> {
    return (await this.claimLookingAhead(queue, limit, owner, leaseMs)).tasks;
  }

  async claimLookingAhead(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimBatch> {
    if (limit <= 0) return { tasks: [] };
    if (!this.limitedQueues.has(queue)) {
      const rows = await this.driver.query<ClaimRow & { next_run_at: Date | null }>(this.s(sql.CLAIM_LOOKING_AHEAD), [
        queue,
        limit,
        owner,
        leaseMs,
        this.eventsChannel,
      ]);
      // One row of nulls, but for next_run_at, when nothing was claimed.
      const claimed = rows[0]?.id == null ? [] : rows;
      if (claimed.length > 0 || !(await this.isLimited(queue))) {
        const tasks = toClaimed(claimed, owner);
        if (tasks.length === limit) return { tasks };
        const at = rows[0]?.next_run_at;
        return { tasks, nextRunAt: at == null ? null : new Date(at) };
      }
    }
    return { tasks: await this.claimLimited(queue, limit, owner, leaseMs) };
  }

  /** Whether `queue` has limits; one that has is remembered, and claimed under its lock from then on. */
  private async isLimited(queue: string): Promise<boolean> {
    if ((await this.driver.query(this.s(sql.IS_LIMITED), [queue])).length === 0) return false;
    this.limitedQueues.add(queue);
    return true;
  }

  private claimLimited(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimedTask[]> {
    return this.driver.transaction(async (query) => {
      const [lim] = await query<LimitsRow & { paused: boolean; limited: boolean }>(this.s(sql.LOCK_LIMITED), [queue]);
      if (lim?.limited !== true) {
        this.limitedQueues.delete(queue);
        return toClaimed(await query<ClaimRow>(this.s(sql.CLAIM), [queue, limit, owner, leaseMs, this.eventsChannel]), owner);
      }
      const groupLimits = lim.group_concurrency !== null || lim.group_rate_max !== null;
      return toClaimed(
        await query<ClaimRow>(this.s(sql.claimLimited(groupLimits, lim.group_ordered)), [queue, limit, owner, leaseMs, this.eventsChannel]),
        owner,
      );
    });
  }

  async setLimits(queue: string, limits: QueueLimits | null): Promise<void> {
    const l = checkLimits(queue, limits);
    await this.driver.query(this.s(sql.SET_LIMITS), [
      queue,
      l !== null,
      l?.concurrency ?? null,
      l?.rate?.max ?? null,
      l?.rate?.intervalMs ?? null,
      l?.group?.concurrency ?? null,
      l?.group?.rate?.max ?? null,
      l?.group?.rate?.intervalMs ?? null,
      l?.group?.ordered === true,
    ]);
    // Producers holding back for the old limits look again.
    await this.notify([queue]);
  }

  async limits(queue: string): Promise<QueueLimits | null> {
    const [r] = await this.driver.query<LimitsRow>(this.s(sql.LIMITS), [queue]);
    if (r === undefined) return null;
    const rate = (max: number | null, intervalMs: number | null) => (max === null || intervalMs === null ? undefined : { max, intervalMs });
    return checkLimits(queue, {
      ...(r.concurrency === null ? {} : { concurrency: r.concurrency }),
      ...(r.rate_max === null ? {} : { rate: rate(r.rate_max, r.rate_interval_ms) }),
      group: {
        ...(r.group_concurrency === null ? {} : { concurrency: r.group_concurrency }),
        ...(r.group_rate_max === null ? {} : { rate: rate(r.group_rate_max, r.group_rate_interval_ms) }),
        ...(r.group_ordered ? { ordered: true } : {}),
      },
    } as QueueLimits);
  }

  async adopt(claims: readonly TaskClaim[], holder: string, leaseMs: number): Promise<TaskClaim[]> {
    const foreign = claims.filter((c) => c.claimant !== holder && wellFormed(c));
    const taken =
      foreign.length === 0
        ? new Set<string>()
        : new Set(
            (await this.driver.query<{ id: string }>(this.s(sql.ADOPT), [...claimArrays(foreign), holder, leaseMs])).map((r) => r.id),
          );
    return claims.flatMap((c) =>
      c.claimant === holder ? [c] : taken.has(c.id) ? [{ id: c.id, attempt: c.attempt, claimant: holder }] : [],
    );
  }

  async complete(all: readonly TaskOutcomeRecord[]): Promise<string[]> {
    const outcomes = all.filter(wellFormed);
    if (outcomes.length === 0) return [];
    const rows = await this.driver.query<{ id: string; queue: string; name: string; attempt: number; state: TaskState }>(
      this.s(sql.COMPLETE),
      [
        ...claimArrays(outcomes),
        outcomes.map((o) => o.status),
        outcomes.map((o) => (o.status === 'success' ? null : o.error)),
        outcomes.map((o) => (o.status !== 'success' && o.retryAt !== undefined ? o.retryAt.toISOString() : null)),
        outcomes.map((o) => (o.durationMs === undefined ? null : Math.min(2_147_483_647, Math.max(0, Math.round(o.durationMs))))),
        outcomes.map((o) => (isTraceparent(o.firstRunTraceparent) ? o.firstRunTraceparent : null)),
        this.eventsChannel,
      ],
    );
    // A task that ends makes room in a limited queue: its producers, held back, look again.
    if (rows.length > 0) await this.notify([...this.limitedQueues]);
    return rows.map((r) => r.id);
  }

  /**
   * Records a running task's success on the caller's query function, inside
   * their transaction: the handler's own writes and the outcome commit
   * together or not at all. False when this claim is no longer current (its
   * lease lapsed and another run took the task, or it finished): the caller
   * must then roll back.
   */
  async succeedWith(query: Query, claim: TaskClaim): Promise<boolean> {
    if (!wellFormed(claim)) return false;
    const rows = await query<{ id: string; queue: string; name: string }>(this.s(sql.SUCCEED_WITHIN), [
      claim.id,
      claim.attempt,
      claim.claimant,
    ]);
    await this.emit(
      query,
      rows.map((r) => ({ type: 'succeeded' as const, id: r.id, queue: r.queue, name: r.name, attempt: claim.attempt })),
    );
    return rows.length === 1;
  }

  async progress(claim: TaskClaim, progress: TaskProgress): Promise<boolean> {
    const json = checkProgress(progress);
    if (!wellFormed(claim)) return false;
    const rows = await this.driver.query<{ id: string; queue: string; name: string }>(this.s(sql.PROGRESS), [
      ...claimArrays([claim]),
      json,
    ]);
    await this.emit(
      this.driver.query,
      rows.map((r) => ({ type: 'progress' as const, id: r.id, queue: r.queue, name: r.name, attempt: claim.attempt, progress })),
    );
    return rows.length === 1;
  }

  async extendLeases(all: readonly TaskClaim[], leaseMs: number): Promise<string[]> {
    const claims = all.filter(wellFormed);
    if (claims.length === 0) return [];
    return (await this.driver.query<{ id: string }>(this.s(sql.EXTEND), [...claimArrays(claims), leaseMs])).map((r) => r.id);
  }

  async release(all: readonly TaskClaim[]): Promise<string[]> {
    const claims = all.filter(wellFormed);
    if (claims.length === 0) return [];
    return this.unclaim(sql.RELEASE, claimArrays(claims));
  }

  async releaseHeld(holder: string): Promise<string[]> {
    return this.unclaim(sql.RELEASE_HELD, [holder]);
  }

  private async unclaim(statement: string, params: unknown[]): Promise<string[]> {
    const rows = await this.driver.query<{ id: string; queue: string; name: string; attempt: number }>(this.s(statement), params);
    await this.emit(
      this.driver.query,
      rows.map((r) => ({ type: 'released' as const, id: r.id, queue: r.queue, name: r.name, attempt: r.attempt })),
    );
    await this.notify(rows.map((r) => r.queue));
    return rows.map((r) => r.id);
  }

  /** Wakes producers of these queues (delivered at commit). */
  private async notify(queues: readonly string[]): Promise<void> {
    const distinct = [...new Set(queues)];
    if (distinct.length > 0) await this.driver.query(sql.NOTIFY, [this.channel, distinct]);
  }

  async recoverExpired(): Promise<number> {
    const rows = await this.driver.query<{ id: string; queue: string; name: string; attempt: number; error: string; state: TaskState }>(
      this.s(sql.RECOVER),
    );
    await this.emit(
      this.driver.query,
      rows.map((r) => leaseLostEvent(r.state !== 'waiting', r)),
    );
    await this.notify(rows.map((r) => r.queue));
    return rows.length;
  }

  async nextRunAt(queue: string): Promise<Date | null> {
    const [row] = await this.driver.query<{ run_at: Date | null }>(this.s(sql.NEXT_RUN_AT), [queue]);
    const at = row?.run_at == null ? null : new Date(row.run_at);
    if (at === null || !this.limitedQueues.has(queue) || at.getTime() > Date.now()) return at;
    // Due tasks a limited queue held back: they can start once a start leaves its rate window, or a running task ends (notified).
    const [open] = await this.driver.query<{ at: Date | null }>(this.s(sql.LIMITED_NEXT_AT), [queue]);
    return open?.at == null ? null : new Date(open.at);
  }

  /**
   * Lifecycle events: one NOTIFY each on the schema's events channel, sent
   * with (and only if) the change commits, and only while someone follows.
   */
  private async emit(query: Query, events: readonly Omit<TaskEvent, 'at'>[]): Promise<void> {
    if (events.length > 0) await query(this.s(sql.EMIT_EVENTS), [this.eventsChannel, events.map((e) => encodeEvent(e))]);
  }

  /**
   * Listens, then registers as a follower (renewed until the iteration
   * ends): events are built and sent only while a follower is registered,
   * so a store no one follows pays nothing for them.
   */
  events(options?: TaskEventsOptions): AsyncIterable<TaskEvent | TaskEventsOverflow> {
    return followEvents(async (push) => {
      const unlisten = await this.driver.listen(this.eventsChannel, push);
      const id = randomUUID();
      const follow = () => this.driver.query(this.s(sql.FOLLOW), [id, this.followerTtlMs]);
      try {
        await follow();
      } catch (error) {
        await unlisten();
        throw error;
      }
      // A renewal that fails is tried again at the next; events sent meanwhile still reach this follower until its row expires.
      const renewing = setInterval(() => follow().catch(this.onError), this.followerTtlMs / 3);
      renewing.unref();
      return async () => {
        clearInterval(renewing);
        await this.driver.query(this.s(sql.UNFOLLOW), [id]).catch(this.onError);
        await unlisten();
      };
    }, options);
  }

  onEnqueued(queue: string, listener: () => void): Promise<() => Promise<void>> {
    return this.driver.listen(this.channel, (payload) => {
      if (payload === queue) listener();
    });
  }

  async counts(): Promise<TaskCount[]> {
    return this.driver.query<TaskCount>(this.s(sql.COUNTS));
  }

  async list(filter: TaskListFilter): Promise<TaskRecord[]> {
    const rows = await this.driver.query<TaskRow>(this.s(sql.LIST), [...sql.filterParams(filter), filter.limit ?? 100, filter.offset ?? 0]);
    return rows.map(toRecord);
  }

  async countWhere(filter: TaskFilter): Promise<number> {
    const [row] = await this.driver.query<{ count: number }>(this.s(sql.COUNT_WHERE), sql.filterParams(filter));
    return row?.count ?? 0;
  }

  async attempts(id: string): Promise<TaskAttempt[]> {
    if (!/^\d{1,19}$/.test(id)) return [];
    const rows = await this.driver.query<{
      attempt: number;
      outcome: TaskAttempt['outcome'];
      error: string | null;
      duration_ms: number | null;
      owner: string | null;
      finished_at: Date;
    }>(this.s(sql.ATTEMPTS), [id, ATTEMPTS_SHOWN]);
    return rows.reverse().map((r) => ({
      attempt: r.attempt,
      outcome: r.outcome,
      error: r.error,
      durationMs: r.duration_ms,
      owner: r.owner,
      finishedAt: new Date(r.finished_at),
    }));
  }

  async get(id: string): Promise<TaskRecord | null> {
    if (!/^\d{1,19}$/.test(id)) return null;
    const [row] = await this.driver.query<TaskRow>(this.s(sql.GET), [id]);
    return row === undefined ? null : toRecord(row);
  }

  async retry(ids: readonly string[]): Promise<string[]> {
    const rows = await this.driver.query<{ id: string; queue: string; name: string }>(this.s(sql.RETRY), [ids]);
    await this.emit(
      this.driver.query,
      rows.map((r) => ({ type: 'retried' as const, id: r.id, queue: r.queue, name: r.name, attempt: 0 })),
    );
    await this.notify(rows.map((r) => r.queue));
    return rows.map((r) => r.id);
  }

  async cancel(ids: readonly string[]): Promise<string[]> {
    return this.cancelled(await this.driver.query<CancelledRow>(this.s(sql.CANCEL), [ids]));
  }

  async cancelRunning(ids: readonly string[]): Promise<string[]> {
    const valid = ids.filter((id) => /^\d{1,19}$/.test(id));
    if (valid.length === 0) return [];
    return this.cancelled(await this.driver.query<CancelledRow>(this.s(sql.CANCEL_RUNNING), [valid]));
  }

  private async cancelled(rows: readonly CancelledRow[]): Promise<string[]> {
    await this.emit(
      this.driver.query,
      rows.map((r) => ({ type: 'cancelled' as const, id: r.id, queue: r.queue, name: r.name, attempt: r.attempt })),
    );
    return rows.map((r) => r.id);
  }

  /** Events of a bulk change, per task. */
  private async emitGrouped(type: 'retried' | 'cancelled', rows: readonly GroupedRow[]): Promise<void> {
    await this.emit(
      this.driver.query,
      rows.flatMap((g) => g.ids.map((id, i) => ({ type, id, queue: g.queue, name: g.names[i] ?? '' }))),
    );
  }

  async retryWhere(filter: TaskFilter): Promise<number> {
    const rows = await this.driver.query<GroupedRow>(this.s(sql.RETRY_WHERE), sql.filterParams(filter));
    await this.emitGrouped('retried', rows);
    await this.notify(rows.map((r) => r.queue));
    return rows.reduce((n, r) => n + r.count, 0);
  }

  async cancelWhere(filter: TaskFilter): Promise<number> {
    const rows = await this.driver.query<GroupedRow>(this.s(sql.CANCEL_WHERE), sql.filterParams(filter));
    await this.emitGrouped('cancelled', rows);
    return rows.reduce((n, r) => n + r.count, 0);
  }

  async pause(queue: string): Promise<void> {
    await this.driver.query(this.s(sql.PAUSE), [queue]);
  }

  async resume(queue: string): Promise<void> {
    await this.driver.query(this.s(sql.RESUME), [queue]);
    // Producers with demand on the queue stopped looking for work: wake them.
    await this.notify([queue]);
  }

  async paused(): Promise<string[]> {
    return (await this.driver.query<{ name: string }>(this.s(sql.PAUSED))).map((r) => r.name);
  }

  async defineSchedules(schedules: readonly ScheduleDefinition[]): Promise<void> {
    const checked = schedules.map((s, i) => checkSchedule(s, `schedule ${i}`));
    if (checked.length === 0) return;
    await this.driver.query(this.s(sql.DEFINE_SCHEDULES), [
      checked.map((s) => s.name),
      checked.map((s) => s.cron),
      checked.map((s) => s.tz),
      checked.map((s) => JSON.stringify(s.task)),
      checked.map((s) => s.backfill),
    ]);
  }

  async schedules(): Promise<ScheduleRecord[]> {
    const rows = await this.driver.query<{
      name: string;
      cron: string;
      tz: string;
      task: ScheduleRecord['task'];
      backfill: number;
      last_fire_at: Date | null;
      created_at: Date;
    }>(this.s(sql.SCHEDULES));
    return rows.map((r) => ({
      name: r.name,
      cron: r.cron,
      tz: r.tz,
      task: r.task,
      backfill: r.backfill,
      lastFireAt: r.last_fire_at === null ? null : new Date(r.last_fire_at),
      createdAt: new Date(r.created_at),
    }));
  }

  async removeSchedule(name: string): Promise<boolean> {
    return (await this.driver.query(this.s(sql.REMOVE_SCHEDULE), [name])).length === 1;
  }

  async fireSchedule(name: string, fireAt: Date, task?: NewTask): Promise<EnqueueResult | 'skipped' | null> {
    return this.driver.transaction(async (query) => {
      const moved = await query(this.s(sql.FIRE_SCHEDULE), [name, fireAt.toISOString()]);
      if (moved.length === 0) return null;
      if (task === undefined) return 'skipped';
      const [result] = await this.enqueueWith(query, [task]);
      return result ?? null;
    });
  }

  async pruneFinished(policy: Required<RetentionPolicy>, batchSize: number): Promise<PruneCount[]> {
    const out: PruneCount[] = [];
    for (const state of FINISHED_STATES) {
      const rule = policy[state];
      if (rule === false) continue;
      let count = 0;
      const run = async (statement: string, bound: number) => {
        const [row] = await this.driver.query<{ count: number }>(this.s(statement), [state, bound, batchSize - count]);
        count += row?.count ?? 0;
      };
      if (rule.maxAgeMs !== undefined) await run(sql.PRUNE_OLDER, rule.maxAgeMs);
      if (rule.maxCount !== undefined && count < batchSize) await run(sql.PRUNE_BEYOND, rule.maxCount);
      if (count > 0) out.push({ states: [state], count });
    }
    // Unique-key windows that ended hold nothing: they go with each pass, and so do the counter rows of ended connections.
    await this.driver.query(this.s(sql.PRUNE_WINDOWS));
    await this.driver.query(this.s(sql.FOLD_COUNTS));
    return out;
  }

  close(): Promise<void> {
    return this.driver.close();
  }
}
