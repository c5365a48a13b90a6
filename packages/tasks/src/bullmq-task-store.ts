import { randomUUID } from 'node:crypto';
import { FabricError, type RedisConnectionOptions, redactError, redisConnectionOptions, redisPassword } from '@stagefabric/runtime';
import { Job, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { checkTasks, TASK_DEFAULTS } from './task-input.js';
import {
  type ClaimedTask,
  type EnqueueResult,
  type NewTask,
  RETRYABLE_STATES,
  type TaskAttempt,
  type TaskCount,
  type TaskFilter,
  type TaskListFilter,
  type TaskOutcomeRecord,
  type TaskRecord,
  type TaskState,
  type TaskStore,
} from './task-store.js';

export interface BullMQTaskStoreOptions {
  readonly url: string;
  /** BullMQ's key prefix. Default 'bull', BullMQ's own, so its dashboards and producers see the same queues. */
  readonly prefix?: string;
  readonly maxPayloadBytes?: number;
  /**
   * Filters (list, countWhere, retryWhere, cancelWhere) run in memory over
   * at most this many of the newest jobs of each state of each queue.
   * Default 10 000.
   */
  readonly scanMax?: number;
  /** Background failures of its connections (a lost connection, a refused password), credentials removed. */
  readonly onError?: (error: Error) => void;
}

/** What a job's data keeps of each finished attempt (JSON: dates as Unix milliseconds). */
interface StoredAttempt {
  readonly attempt: number;
  readonly outcome: TaskAttempt['outcome'];
  readonly error: string | null;
  readonly durationMs: number | null;
  readonly owner: string | null;
  readonly finishedAt: number;
}

/** Attempts kept in a job's data: the latest ones, so the data stays bounded. */
const ATTEMPTS_KEPT = 100;

/** What a task carries in its BullMQ job's data. */
interface TaskData {
  readonly args: unknown;
  readonly timeoutMs: number;
  readonly maxAttempts: number;
  readonly uniqueKey: string | null;
  /** attemptsStarted at the last operator retry: attempts count from there. */
  attemptBase?: number;
  lastError?: string | null;
  /** Final outcome of a failed job: 'error', 'timeout' or 'cancelled'. */
  outcome?: TaskState;
  /** Cancelled while waiting: the next claim moves it to failed instead of running it. */
  cancelled?: boolean;
  /** Finished attempts, oldest first, the latest ATTEMPTS_KEPT. */
  attempts?: StoredAttempt[];
}

/** The job's data with one more finished attempt in its history. */
function withAttempt(data: TaskData, attempt: StoredAttempt): TaskData {
  return { ...data, attempts: [...(data.attempts ?? []), attempt].slice(-ATTEMPTS_KEPT) };
}

/** A job added by a plain BullMQ producer carries its args as the whole data: read it as a task with default settings. */
function taskData(data: unknown): TaskData {
  const d = data as Partial<TaskData> | null;
  if (d !== null && typeof d === 'object' && 'args' in d && typeof d.timeoutMs === 'number' && typeof d.maxAttempts === 'number')
    return d as TaskData;
  return { args: data, timeoutMs: TASK_DEFAULTS.timeoutMs, maxAttempts: TASK_DEFAULTS.maxAttempts, uniqueKey: null };
}

// Our priorities (lower first, 0 default) onto BullMQ's (1 highest .. 2^21): every job prioritized, so one order holds.
const PRIORITY_OFFSET = 1_000_001;

/**
 * The task store on Redis through BullMQ: tasks are BullMQ jobs of a queue
 * per task queue, claimed by demand (Worker.getNextJob, no processing loop of
 * BullMQ's own), locks as leases, BullMQ's stalled-job check as lease
 * recovery. Outcomes, retries and their backoff are the task runner's, so
 * jobs are added with one BullMQ attempt. Task ids are `queue/jobId`.
 */
export class BullMQTaskStore implements TaskStore {
  private readonly prefix: string;
  private readonly redis: Redis;
  private subscriber: Redis | undefined;
  private readonly queues = new Map<string, Queue>();
  private readonly workers = new Map<string, Worker>();
  /** Lease tokens of the tasks this process claimed: BullMQ unlocks with the token, the contract with the owner. */
  private readonly leases = new Map<string, { readonly owner: string; readonly token: string; readonly job: Job<TaskData> }>();
  private readonly listeners = new Map<string, Set<() => void>>();
  private readonly maxPayloadBytes: number;
  private readonly scanMax: number;
  /** The URL read once, as the fabric reads it (TLS for rediss://, the database, the ACL user, %-decoded credentials). */
  private readonly connectionOptions: RedisConnectionOptions;
  private lastError: Error | undefined;
  private readonly onError = (error: Error) => {
    this.lastError = redactError(error, redisPassword(this.options.url));
    this.options.onError?.(this.lastError);
  };

  constructor(private readonly options: BullMQTaskStoreOptions) {
    this.prefix = options.prefix ?? 'bull';
    this.connectionOptions = redisConnectionOptions(options.url, 'the BullMQ task store URL');
    this.redis = new Redis({ ...this.connectionOptions, maxRetriesPerRequest: null });
    this.redis.on('error', this.onError);
    this.maxPayloadBytes = options.maxPayloadBytes ?? TASK_DEFAULTS.maxPayloadBytes;
    this.scanMax = options.scanMax ?? 10_000;
  }

  private get connection() {
    return { ...this.connectionOptions, maxRetriesPerRequest: null };
  }

  private queue(name: string): Queue {
    let q = this.queues.get(name);
    if (q === undefined) {
      q = new Queue(name, { connection: this.connection, prefix: this.prefix });
      q.on('error', this.onError);
      this.queues.set(name, q);
    }
    return q;
  }

  private worker(queue: string, leaseMs: number): Worker {
    const key = `${queue}\u0000${leaseMs}`;
    let w = this.workers.get(key);
    if (w === undefined) {
      // No processor and no autorun: jobs are fetched only when demand asks for them.
      w = new Worker(queue, null, {
        connection: this.connection,
        prefix: this.prefix,
        autorun: false,
        lockDuration: leaseMs,
        stalledInterval: Math.max(50, Math.floor(leaseMs / 2)),
        maxStalledCount: 1_000_000,
        skipLockRenewal: true,
      });
      w.on('error', this.onError);
      this.workers.set(key, w);
    }
    return w;
  }

  private uniqueKey(queue: string, key: string): string {
    return `${this.prefix}:stagefabric-unique:${queue}:${key}`;
  }

  private static split(id: string): { queue: string; jobId: string } | undefined {
    const slash = id.lastIndexOf('/');
    return slash <= 0 ? undefined : { queue: id.slice(0, slash), jobId: id.slice(slash + 1) };
  }

  /**
   * Checks that Redis answers. Commands wait across reconnects (an agent
   * outlives a Redis restart), so this is the one place that gives up:
   * after `connectTimeoutMs` (default 10 s), naming Redis's last error.
   */
  async migrate(connectTimeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const why = this.lastError === undefined ? 'no answer' : this.lastError.message;
        reject(new FabricError('SF_CALL_TIMEOUT', `the BullMQ task store's Redis did not answer within ${connectTimeoutMs} ms: ${why}`));
      }, connectTimeoutMs);
    });
    try {
      await Promise.race([this.redis.ping(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async enqueue(tasks: readonly NewTask[]): Promise<EnqueueResult[]> {
    const checked = checkTasks(tasks, this.maxPayloadBytes);
    const results: EnqueueResult[] = [];
    const byQueue = new Map<
      string,
      { name: string; data: TaskData; opts: { jobId: string; priority: number; delay: number; attempts: number } }[]
    >();
    for (const t of checked) {
      const jobId = randomUUID();
      const id = `${t.queue}/${jobId}`;
      if (t.uniqueKey !== null) {
        // Refused while a task with the key is pending: the key is held until that task reaches a final state.
        const taken = await this.redis.set(this.uniqueKey(t.queue, t.uniqueKey), id, 'NX');
        if (taken === null) {
          results.push({ id: (await this.redis.get(this.uniqueKey(t.queue, t.uniqueKey))) ?? id, duplicate: true });
          continue;
        }
      }
      results.push({ id, duplicate: false });
      const list = byQueue.get(t.queue) ?? [];
      byQueue.set(t.queue, list);
      list.push({
        name: t.name,
        data: { args: JSON.parse(t.args), timeoutMs: t.timeoutMs, maxAttempts: t.maxAttempts, uniqueKey: t.uniqueKey },
        opts: { jobId, priority: t.priority + PRIORITY_OFFSET, delay: Math.max(0, t.runAt.getTime() - Date.now()), attempts: 1 },
      });
    }
    for (const [queue, jobs] of byQueue) {
      await this.queue(queue).addBulk(jobs);
      await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, queue);
    }
    return results;
  }

  async claim(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimedTask[]> {
    const worker = this.worker(queue, leaseMs);
    // Ask only for what is there: waiting jobs, and a few probes when delayed ones may have come due.
    const counts = await this.queue(queue).getJobCounts('wait', 'prioritized', 'delayed');
    const ready = (counts.wait ?? 0) + (counts.prioritized ?? 0) + ((counts.delayed ?? 0) > 0 ? 10 : 0);
    const wanted = Math.min(limit, ready);
    // Each fetch is one atomic script; sent together on one connection, Redis runs them in order,
    // so the results keep priority order.
    const fetched = await Promise.all(
      Array.from({ length: wanted }, async () => {
        const token = `${owner}:${randomUUID()}`;
        const job = (await worker.getNextJob(token, { block: false })) as Job<TaskData> | undefined;
        return job === undefined || job === null ? undefined : { job, token };
      }),
    );
    const claimed: ClaimedTask[] = [];
    for (const got of fetched) {
      if (got === undefined) continue;
      const { job, token } = got;
      job.data = taskData(job.data);
      const id = `${queue}/${job.id}`;
      if (job.data.cancelled) {
        await job.updateData({ ...job.data, outcome: 'cancelled' });
        await job.moveToFailed(new Error('cancelled'), token, false);
        continue;
      }
      this.leases.set(id, { owner, token, job });
      claimed.push({
        id,
        queue,
        name: job.name,
        args: job.data.args,
        attempt: job.attemptsStarted - (job.data.attemptBase ?? 0),
        maxAttempts: job.data.maxAttempts,
        timeoutMs: job.data.timeoutMs,
        enqueuedAt: new Date(job.timestamp),
        leaseExpiresAt: new Date(Date.now() + leaseMs),
      });
    }
    return claimed;
  }

  private leased(id: string, owner: string): { job: Job<TaskData>; token: string } | undefined {
    const lease = this.leases.get(id);
    return lease === undefined || lease.owner !== owner ? undefined : { job: lease.job, token: lease.token };
  }

  private async releaseKey(job: Job<TaskData>, id: string): Promise<void> {
    const key = job.data.uniqueKey;
    if (key === null || key === undefined) return;
    const k = this.uniqueKey(job.queueName, key);
    if ((await this.redis.get(k)) === id) await this.redis.del(k);
  }

  async complete(outcomes: readonly TaskOutcomeRecord[], owner: string): Promise<string[]> {
    const done = await Promise.all(
      outcomes.map(async (o) => {
        const held = this.leased(o.id, owner);
        if (held === undefined) return undefined;
        this.leases.delete(o.id);
        const { job, token } = held;
        // The history is written just before the move that records the outcome (BullMQ has no transaction spanning both).
        const data = withAttempt(job.data, {
          attempt: job.attemptsStarted - (job.data.attemptBase ?? 0),
          outcome: o.status,
          error: o.status === 'success' ? null : o.error,
          durationMs: o.durationMs === undefined ? null : Math.round(o.durationMs),
          owner,
          finishedAt: Date.now(),
        });
        try {
          if (o.status === 'success') {
            await job.updateData(data);
            await job.moveToCompleted('success', token, false);
            await this.releaseKey(job, o.id);
          } else if (o.retryAt !== undefined) {
            await job.updateData({ ...data, lastError: o.error });
            await job.moveToDelayed(o.retryAt.getTime(), token);
          } else {
            await job.updateData({ ...data, lastError: o.error, outcome: o.status });
            await job.moveToFailed(new Error(o.error), token, false);
            await this.releaseKey(job, o.id);
          }
          return o.id;
        } catch {
          // The lock was lost (lease expired, another node took the task): the outcome does not count.
          return undefined;
        }
      }),
    );
    return done.filter((id): id is string => id !== undefined);
  }

  async extendLeases(ids: readonly string[], owner: string, leaseMs: number): Promise<string[]> {
    const kept = await Promise.all(
      ids.map(async (id) => {
        const held = this.leased(id, owner);
        return held !== undefined && (await held.job.extendLock(held.token, leaseMs)) === 1 ? id : undefined;
      }),
    );
    return kept.filter((id): id is string => id !== undefined);
  }

  async release(ids: readonly string[], owner: string): Promise<string[]> {
    const released: string[] = [];
    for (const id of ids) {
      const held = this.leased(id, owner);
      if (held === undefined) continue;
      // Not counted as an attempt: the base moves with the start BullMQ counted.
      await held.job.updateData({ ...held.job.data, attemptBase: (held.job.data.attemptBase ?? 0) + 1 });
      await held.job.moveToDelayed(Date.now(), held.token);
      this.leases.delete(id);
      released.push(id);
    }
    return released;
  }

  releaseHeld(owner: string): Promise<string[]> {
    return this.release(
      [...this.leases].filter(([, lease]) => lease.owner === owner).map(([id]) => id),
      owner,
    );
  }

  async recoverExpired(): Promise<number> {
    let recovered = 0;
    for (const [key, worker] of this.workers) {
      const queue = key.slice(0, key.indexOf('\u0000'));
      const scripts = (worker as unknown as { scripts: { moveStalledJobsToWait(): Promise<[string[], string[]]> } }).scripts;
      const [, stalled] = await scripts.moveStalledJobsToWait();
      for (const jobId of stalled) {
        const id = `${queue}/${jobId}`;
        const owner = this.leases.get(id)?.owner ?? '?';
        this.leases.delete(id);
        const job = (await Job.fromId(this.queue(queue), jobId)) as Job<TaskData> | undefined;
        if (job === undefined) continue;
        const data = taskData(job.data);
        const lastError = `lease of ${owner} expired: its node stopped or stalled`;
        await job.updateData({
          ...withAttempt(data, {
            // BullMQ counted the lost start; the attempt that was lost is the one before the next.
            attempt: job.attemptsStarted - (data.attemptBase ?? 0),
            outcome: 'lost',
            error: lastError,
            durationMs: null,
            owner: owner === '?' ? null : owner,
            finishedAt: Date.now(),
          }),
          lastError,
        });
      }
      recovered += stalled.length;
    }
    return recovered;
  }

  async nextRunAt(queue: string): Promise<Date | null> {
    // A paused queue gives its producers no wake-up time: resume() wakes them.
    if (await this.queue(queue).isPaused()) return null;
    const [first] = (await this.queue(queue).getDelayed(0, 0)) as Job[];
    return first === undefined ? null : new Date(first.timestamp + first.delay);
  }

  async onEnqueued(queue: string, listener: () => void): Promise<() => Promise<void>> {
    if (this.subscriber === undefined) {
      this.subscriber = this.redis.duplicate();
      this.subscriber.on('error', this.onError);
      await this.subscriber.subscribe(`${this.prefix}:stagefabric-enqueued`);
      this.subscriber.on('message', (_channel: string, q: string) => {
        for (const l of this.listeners.get(q) ?? []) l();
      });
    }
    const set = this.listeners.get(queue) ?? new Set<() => void>();
    this.listeners.set(queue, set);
    set.add(listener);
    return async () => {
      set.delete(listener);
    };
  }

  /** Every queue of this prefix, including those other producers made. */
  private async knownQueues(): Promise<string[]> {
    const names = new Set(this.queues.keys());
    let cursor = '0';
    do {
      const [next, keys] = await this.redis.scan(cursor, 'MATCH', `${this.prefix}:*:meta`, 'COUNT', 500);
      cursor = next;
      for (const k of keys) names.add(k.slice(this.prefix.length + 1, -':meta'.length));
    } while (cursor !== '0');
    return [...names].sort();
  }

  private toRecord(job: Job<TaskData>, state: string): TaskRecord {
    const id = `${job.queueName}/${job.id}`;
    const data = taskData(job.data);
    const lease = this.leases.get(id);
    const mapped: TaskState =
      state === 'active'
        ? 'running'
        : state === 'completed'
          ? 'success'
          : state === 'failed'
            ? (data.outcome ?? 'error')
            : data.cancelled
              ? 'cancelled'
              : 'waiting';
    return {
      id,
      queue: job.queueName,
      name: job.name,
      args: data.args,
      state: mapped,
      priority: (job.opts.priority ?? PRIORITY_OFFSET) - PRIORITY_OFFSET,
      attempt: job.attemptsStarted - (data.attemptBase ?? 0),
      maxAttempts: data.maxAttempts,
      timeoutMs: data.timeoutMs,
      runAt: new Date(job.timestamp + (job.delay ?? 0)),
      uniqueKey: data.uniqueKey,
      leaseOwner: mapped === 'running' ? (lease?.owner ?? null) : null,
      leaseExpiresAt: null,
      lastError: data.lastError ?? null,
      createdAt: new Date(job.timestamp),
      updatedAt: new Date(job.finishedOn ?? job.processedOn ?? job.timestamp),
      finishedAt: job.finishedOn === undefined ? null : new Date(job.finishedOn),
    };
  }

  /** The jobs of a queue in every state; with `max`, at most the newest `max` of each state. */
  private async jobsOf(queue: string, max?: number): Promise<{ job: Job<TaskData>; state: string }[]> {
    const q = this.queue(queue);
    const out: { job: Job<TaskData>; state: string }[] = [];
    // A paused queue keeps its waiting jobs in BullMQ's `paused` list.
    for (const state of ['active', 'completed', 'failed', 'wait', 'paused', 'prioritized', 'delayed'] as const) {
      for (const job of (await q.getJobs([state], 0, max === undefined ? -1 : max - 1)) as Job<TaskData>[])
        if (job !== undefined) out.push({ job, state });
    }
    return out;
  }

  /** Tasks matching a filter, newest first, from a scan of at most scanMax jobs per state and queue. */
  private async matching(filter: TaskFilter): Promise<TaskRecord[]> {
    const queues = filter.queue === undefined ? await this.knownQueues() : [filter.queue];
    const needle = filter.errorContains?.toLowerCase() ?? '';
    const records: TaskRecord[] = [];
    for (const queue of queues) {
      for (const { job, state } of await this.jobsOf(queue, this.scanMax)) {
        const r = this.toRecord(job, state);
        if (filter.state !== undefined && r.state !== filter.state) continue;
        if (filter.name !== undefined && r.name !== filter.name) continue;
        if (needle !== '' && !(r.lastError ?? '').toLowerCase().includes(needle)) continue;
        records.push(r);
      }
    }
    return records.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
  }

  async counts(): Promise<TaskCount[]> {
    const counts = new Map<string, number>();
    for (const queue of await this.knownQueues()) {
      for (const { job, state } of await this.jobsOf(queue)) {
        const key = `${queue}\u0000${this.toRecord(job, state).state}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
    }
    return [...counts]
      .map(([k, count]) => {
        const [queue, state] = k.split('\u0000') as [string, TaskState];
        return { queue, state, count };
      })
      .sort((a, b) => a.queue.localeCompare(b.queue) || a.state.localeCompare(b.state));
  }

  async list(filter: TaskListFilter): Promise<TaskRecord[]> {
    const offset = filter.offset ?? 0;
    return (await this.matching(filter)).slice(offset, offset + (filter.limit ?? 100));
  }

  async countWhere(filter: TaskFilter): Promise<number> {
    return (await this.matching(filter)).length;
  }

  async retryWhere(filter: TaskFilter): Promise<number> {
    const ids = (await this.matching(filter)).filter((r) => RETRYABLE_STATES.includes(r.state)).map((r) => r.id);
    return (await this.retry(ids)).length;
  }

  async cancelWhere(filter: TaskFilter): Promise<number> {
    const ids = (await this.matching(filter)).filter((r) => r.state === 'waiting').map((r) => r.id);
    return (await this.cancel(ids)).length;
  }

  async attempts(id: string): Promise<TaskAttempt[]> {
    const where = BullMQTaskStore.split(id);
    if (where === undefined) return [];
    const job = (await Job.fromId(this.queue(where.queue), where.jobId)) as Job<TaskData> | undefined;
    if (job === undefined) return [];
    return (taskData(job.data).attempts ?? []).map((a) => ({ ...a, finishedAt: new Date(a.finishedAt) }));
  }

  async pause(queue: string): Promise<void> {
    await this.queue(queue).pause();
  }

  async resume(queue: string): Promise<void> {
    await this.queue(queue).resume();
    await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, queue);
  }

  async paused(): Promise<string[]> {
    const out: string[] = [];
    for (const queue of await this.knownQueues()) if (await this.queue(queue).isPaused()) out.push(queue);
    return out;
  }

  async get(id: string): Promise<TaskRecord | null> {
    const where = BullMQTaskStore.split(id);
    if (where === undefined) return null;
    const job = (await Job.fromId(this.queue(where.queue), where.jobId)) as Job<TaskData> | undefined;
    if (job === undefined) return null;
    return this.toRecord(job, await job.getState());
  }

  async retry(ids: readonly string[]): Promise<string[]> {
    const changed: string[] = [];
    for (const id of ids) {
      const where = BullMQTaskStore.split(id);
      const job = where === undefined ? undefined : ((await Job.fromId(this.queue(where.queue), where.jobId)) as Job<TaskData> | undefined);
      if (job === undefined || where === undefined) continue;
      const state = await job.getState();
      const data: TaskData = { ...job.data, attemptBase: job.attemptsStarted, lastError: null, cancelled: false };
      delete data.outcome;
      if (state === 'failed') {
        await job.updateData(data);
        await job.retry('failed');
      } else if (job.data.cancelled && (state === 'waiting' || state === 'prioritized' || state === 'delayed')) {
        await job.updateData(data);
      } else continue;
      changed.push(id);
      await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, where.queue);
    }
    return changed;
  }

  async cancel(ids: readonly string[]): Promise<string[]> {
    const changed: string[] = [];
    for (const id of ids) {
      const where = BullMQTaskStore.split(id);
      const job = where === undefined ? undefined : ((await Job.fromId(this.queue(where.queue), where.jobId)) as Job<TaskData> | undefined);
      if (job === undefined || job.data.cancelled) continue;
      const state = await job.getState();
      if (state !== 'waiting' && state !== 'prioritized' && state !== 'delayed') continue;
      await job.updateData({ ...job.data, cancelled: true });
      await this.releaseKey(job, id);
      changed.push(id);
    }
    return changed;
  }

  async close(): Promise<void> {
    await Promise.all([...this.workers.values()].map((w) => w.close(true)));
    await Promise.all([...this.queues.values()].map((q) => q.close()));
    this.subscriber?.disconnect();
    this.redis.disconnect();
  }
}
