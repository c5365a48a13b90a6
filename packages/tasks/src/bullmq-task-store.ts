import { randomUUID } from 'node:crypto';
import { FabricError, type RedisConnectionOptions, redactError, redisConnectionOptions, redisPassword } from '@stagefabric/runtime';
import { Job, type JobType, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { checkLimits, checkProgress, checkTasks, TASK_DEFAULTS } from './task-input.js';
import {
  type ClaimedTask,
  type EnqueueResult,
  type NewTask,
  type QueueLimits,
  RETRYABLE_STATES,
  type TaskAttempt,
  type TaskClaim,
  type TaskCount,
  type TaskFilter,
  type TaskListFilter,
  type TaskOutcomeRecord,
  type TaskProgress,
  type TaskRecord,
  type TaskState,
  type TaskStore,
} from './task-store.js';

const lapsedOnLastAttempt = (holder: string, attempt: number, maxAttempts: number): string =>
  `lease of ${holder} expired on its last attempt (${attempt} of ${maxAttempts}): its node stopped or stalled`;

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
  /** What the handler last reported. */
  progress?: TaskProgress | null;
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
 * The store's Workers' maxStalledCount. BullMQ's stalled-job check fails a
 * job once its stalledCounter passes this; each claim sets the counter so
 * that happens exactly when the attempt whose lease lapsed was the task's
 * last, as on the SQL stores.
 */
const STALLED_LIMIT = 1_000_000;

/** How long a room taken in a limited queue is kept for its fetch; a node that dies between the two frees it after this. */
const ROOM_TTL_MS = 30_000;

/** A lock token names its claimant's owner, then a nonce unique to the claim: `owner:uuid`. */
const NONCE_CHARS = 37;
const tokenFor = (owner: string): string => `${owner}:${randomUUID()}`;
const ownerOf = (token: string): string => (token.length > NONCE_CHARS ? token.slice(0, -NONCE_CHARS) : token);

/**
 * Moves a lock from one token to another (or the same: an extension) while
 * the claim holds it (its token, its attempt), like BullMQ's extendLock;
 * records who holds it, so a lapsed lease can name its holder.
 * KEYS: lock, stalled set, job hash. ARGV: token, new token, lease ms, job id, holder ('' keeps it), attempt.
 */
const RELOCK = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[3], 'sfAttempt') ~= ARGV[6] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SREM', KEYS[2], ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], 'sfHolder', ARGV[5]) end
return 1`;

/** Replaces a job's data only while the claim's token holds its lock. KEYS: lock, job hash. ARGV: token, data JSON. */
const UPDATE_IF_HELD = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'data', ARGV[2])
return 1`;

/**
 * Takes room in a limited queue for up to ARGV[1] claims, atomically for
 * every node: concurrency counts BullMQ's active jobs plus rooms taken and
 * not yet filled (each expires after ARGV[2] ms, so a node that dies
 * between taking and fetching frees it); the rate counts starts in the last
 * interval, a sliding log. Returns Redis's time (ms) then the rooms' names
 * (ARGV[3]:i), or -1 when the queue has no limits. KEYS: limits hash, active list, rooms zset, starts zset.
 */
const TAKE_ROOM = `local conc = tonumber(redis.call('HGET', KEYS[1], 'concurrency') or '')
local rmax = tonumber(redis.call('HGET', KEYS[1], 'rateMax') or '')
local rint = tonumber(redis.call('HGET', KEYS[1], 'rateIntervalMs') or '')
if conc == nil and rmax == nil then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local n = tonumber(ARGV[1])
if conc ~= nil then n = math.min(n, conc - redis.call('LLEN', KEYS[2]) - redis.call('ZCARD', KEYS[3])) end
if rmax ~= nil then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - rint)
  n = math.min(n, rmax - redis.call('ZCARD', KEYS[4]))
end
local out = {tostring(now)}
for i = 1, n do
  local m = ARGV[3] .. ':' .. i
  if conc ~= nil then redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), m) end
  if rmax ~= nil then redis.call('ZADD', KEYS[4], now, m) end
  out[#out + 1] = m
end
if rmax ~= nil then redis.call('PEXPIRE', KEYS[4], rint) end
return out`;

/** Gives back rooms: filled ones (their jobs are active now) leave the rooms set; unused ones leave the starts log too. KEYS: rooms, starts. ARGV: filled count, names... */
const GIVE_BACK_ROOM = `local filled = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  if i - 1 > filled then redis.call('ZREM', KEYS[2], ARGV[i]) end
end
return 0`;

/** When a rate-limited queue's oldest start leaves its window (ms since epoch), or -1. KEYS: limits hash, starts zset. */
const RATE_OPENS_AT = `local rint = tonumber(redis.call('HGET', KEYS[1], 'rateIntervalMs') or '')
if rint == nil then return -1 end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] == nil then return -1 end
return tonumber(first[2]) + rint`;

interface LockScripts {
  sfRelock(
    lock: string,
    stalled: string,
    job: string,
    token: string,
    next: string,
    leaseMs: number,
    jobId: string,
    holder: string,
    attempt: string,
  ): Promise<number>;
  sfUpdateIfHeld(lock: string, job: string, token: string, data: string): Promise<number>;
  sfTakeRoom(
    limits: string,
    active: string,
    rooms: string,
    starts: string,
    wanted: number,
    ttlMs: number,
    nonce: string,
  ): Promise<number | string[]>;
  sfGiveBackRoom(rooms: string, starts: string, filled: number, ...names: string[]): Promise<number>;
  sfRateOpensAt(limits: string, starts: string): Promise<number>;
}

interface JobsOfOptions {
  readonly withLocks?: boolean;
  readonly max?: number;
  readonly states?: readonly JobType[];
}

/** The attempt a job's current run is, counted from the last operator retry. */
const attemptOf = (job: Job<TaskData>): number => job.attemptsStarted - (taskData(job.data).attemptBase ?? 0);

/**
 * The task store on Redis through BullMQ: tasks are BullMQ jobs of a queue
 * per task queue, claimed by demand (Worker.getNextJob, no processing loop of
 * BullMQ's own), locks as leases, BullMQ's stalled-job check as lease
 * recovery. Outcomes, retries and their backoff are the task runner's, so
 * jobs are added with one BullMQ attempt. Task ids are `queue/jobId`. A
 * claim's claimant is its lock token, so any process of the fabric can
 * extend, complete or release it: nothing of a claim lives in this process.
 */
export class BullMQTaskStore implements TaskStore {
  private readonly prefix: string;
  private readonly redis: Redis & LockScripts;
  private subscriber: Redis | undefined;
  private readonly queues = new Map<string, Queue>();
  private readonly workers = new Map<string, Worker>();
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
    const redis = new Redis({ ...this.connectionOptions, maxRetriesPerRequest: null });
    redis.defineCommand('sfRelock', { numberOfKeys: 3, lua: RELOCK });
    redis.defineCommand('sfUpdateIfHeld', { numberOfKeys: 2, lua: UPDATE_IF_HELD });
    redis.defineCommand('sfTakeRoom', { numberOfKeys: 4, lua: TAKE_ROOM });
    redis.defineCommand('sfGiveBackRoom', { numberOfKeys: 2, lua: GIVE_BACK_ROOM });
    redis.defineCommand('sfRateOpensAt', { numberOfKeys: 2, lua: RATE_OPENS_AT });
    // defineCommand adds the methods at run time; LockScripts names them for the compiler.
    this.redis = redis as Redis & LockScripts;
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
        maxStalledCount: STALLED_LIMIT,
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
    if (typeof id !== 'string') return undefined;
    const slash = id.lastIndexOf('/');
    return slash <= 0 || slash === id.length - 1 ? undefined : { queue: id.slice(0, slash), jobId: id.slice(slash + 1) };
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
    const grouped = checked.findIndex((t) => t.group !== null);
    if (grouped >= 0)
      throw new FabricError(
        'SF_UNSUPPORTED',
        `task ${grouped} (${checked[grouped]?.name}): option group: the BullMQ task store does not keep groups (a BullMQ Pro feature); use the PostgreSQL or PGlite store`,
      );
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
    const q = this.queue(queue);
    // Ask only for what is there: waiting jobs, and a few probes when delayed ones may have come due.
    const counts = await q.getJobCounts('wait', 'prioritized', 'delayed');
    const ready = (counts.wait ?? 0) + (counts.prioritized ?? 0) + ((counts.delayed ?? 0) > 0 ? 10 : 0);
    let wanted = Math.min(limit, ready);
    if (wanted <= 0) return [];
    // A limited queue: only as many fetches as the room its limits leave, taken atomically for every node.
    const rooms = await this.takeRoom(queue, wanted);
    if (rooms !== undefined) wanted = rooms.names.length;
    // Each fetch is one atomic script; sent together on one connection, Redis runs them in order,
    // so the results keep priority order.
    const fetched = await Promise.all(
      Array.from({ length: wanted }, async () => {
        const token = tokenFor(owner);
        const job = (await worker.getNextJob(token, { block: false })) as Job<TaskData> | undefined;
        return job === undefined || job === null ? undefined : { job, token };
      }),
    );
    if (rooms !== undefined && rooms.names.length > 0) {
      const filled = fetched.filter((f) => f !== undefined).length;
      await this.redis.sfGiveBackRoom(this.limitKey(queue, 'rooms'), this.limitKey(queue, 'starts'), filled, ...rooms.names);
    }
    // A limited queue's claims are timed by Redis, as their starts were counted (its locks were set after: this lease is the earlier bound).
    const claimedAt = rooms?.at ?? Date.now();
    const claimed: ClaimedTask[] = [];
    const marks: Promise<unknown>[] = [];
    for (const got of fetched) {
      if (got === undefined) continue;
      const { job, token } = got;
      job.data = taskData(job.data);
      const id = `${queue}/${job.id}`;
      const attempt = attemptOf(job);
      if (job.data.cancelled) {
        await this.fail(job, token, id, 'cancelled', 'cancelled');
        continue;
      }
      if (attempt > job.data.maxAttempts) {
        // Its last attempt's lease lapsed between the stalled check's passes: it ran as often as it may.
        const holder = (await this.redis.hget(q.toKey(job.id as string), 'sfHolder')) ?? '?';
        await this.fail(job, token, id, 'error', lapsedOnLastAttempt(holder, attempt - 1, job.data.maxAttempts));
        continue;
      }
      // If this attempt's lease lapses, the stalled check fails the job exactly when it was the last.
      marks.push(
        this.redis.hset(
          q.toKey(job.id as string),
          'stalledCounter',
          STALLED_LIMIT - (job.data.maxAttempts - attempt),
          'sfHolder',
          owner,
          'sfAttempt',
          attempt,
        ),
      );
      claimed.push({
        id,
        queue,
        name: job.name,
        args: job.data.args,
        attempt,
        claimant: token,
        maxAttempts: job.data.maxAttempts,
        timeoutMs: job.data.timeoutMs,
        enqueuedAt: new Date(job.timestamp),
        leaseExpiresAt: new Date(claimedAt + leaseMs),
      });
    }
    await Promise.all(marks);
    return claimed;
  }

  private limitKey(queue: string, what: 'limits' | 'rooms' | 'starts'): string {
    return `${this.prefix}:stagefabric-${what}:${queue}`;
  }

  /** The rooms taken for up to `wanted` claims of a limited queue, and when (Redis's clock); undefined when the queue has no limits. */
  private async takeRoom(queue: string, wanted: number): Promise<{ at: number; names: string[] } | undefined> {
    const got = await this.redis.sfTakeRoom(
      this.limitKey(queue, 'limits'),
      this.queue(queue).toKey('active'),
      this.limitKey(queue, 'rooms'),
      this.limitKey(queue, 'starts'),
      wanted,
      ROOM_TTL_MS,
      randomUUID(),
    );
    if (!Array.isArray(got)) return undefined;
    const [at, ...names] = got;
    return { at: Number(at), names };
  }

  async setLimits(queue: string, limits: QueueLimits | null): Promise<void> {
    const l = checkLimits(queue, limits);
    if (l?.group !== undefined)
      throw new FabricError(
        'SF_UNSUPPORTED',
        `limits of queue ${queue}: the BullMQ task store cannot limit or order per group (group.concurrency, group.rate, group.ordered): BullMQ keeps groups only in BullMQ Pro; use the PostgreSQL or PGlite store for groups`,
      );
    const key = this.limitKey(queue, 'limits');
    const fields: string[] = [];
    if (l?.concurrency !== undefined) fields.push('concurrency', String(l.concurrency));
    if (l?.rate !== undefined) fields.push('rateMax', String(l.rate.max), 'rateIntervalMs', String(l.rate.intervalMs));
    const m = this.redis.multi().del(key);
    if (fields.length > 0) m.hset(key, ...fields);
    await m.exec();
    await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, queue);
  }

  async limits(queue: string): Promise<QueueLimits | null> {
    const h = await this.redis.hgetall(this.limitKey(queue, 'limits'));
    return checkLimits(queue, {
      ...(h.concurrency === undefined ? {} : { concurrency: Number(h.concurrency) }),
      ...(h.rateMax === undefined ? {} : { rate: { max: Number(h.rateMax), intervalMs: Number(h.rateIntervalMs) } }),
    });
  }

  /** Fails a locked job for good with `outcome`. */
  private async fail(job: Job<TaskData>, token: string, id: string, outcome: TaskState, error: string): Promise<void> {
    await job.updateData({ ...job.data, lastError: error, outcome });
    await job.moveToFailed(new Error(error), token, false);
    await this.releaseKey(job, id);
  }

  private lockKey(queue: Queue, jobId: string): string {
    return `${queue.toKey(jobId)}:lock`;
  }

  /** Moves a claim's lock to `next` while `token` holds it; false when the claim is not current. */
  private async relock(claim: TaskClaim, next: string, leaseMs: number, holder: string): Promise<boolean> {
    const where = BullMQTaskStore.split(claim.id);
    if (where === undefined || typeof claim.claimant !== 'string') return false;
    const q = this.queue(where.queue);
    const moved = await this.redis.sfRelock(
      this.lockKey(q, where.jobId),
      q.keys.stalled as string,
      q.toKey(where.jobId),
      claim.claimant,
      next,
      leaseMs,
      where.jobId,
      holder,
      String(claim.attempt),
    );
    return moved === 1;
  }

  async adopt(claims: readonly TaskClaim[], holder: string, leaseMs: number): Promise<TaskClaim[]> {
    const taken = await Promise.all(
      claims.map(async (c): Promise<TaskClaim | undefined> => {
        if (typeof c.claimant === 'string' && ownerOf(c.claimant) === holder) return c;
        const token = tokenFor(holder);
        return (await this.relock(c, token, leaseMs, holder)) ? { id: c.id, attempt: c.attempt, claimant: token } : undefined;
      }),
    );
    return taken.filter((c): c is TaskClaim => c !== undefined);
  }

  /** The job of a claim, as stored now, if it is in the claim's attempt. */
  private async jobOf(claim: TaskClaim): Promise<{ job: Job<TaskData>; q: Queue } | undefined> {
    const where = BullMQTaskStore.split(claim.id);
    if (where === undefined || typeof claim.claimant !== 'string') return undefined;
    const q = this.queue(where.queue);
    const job = (await Job.fromId(q, where.jobId)) as Job<TaskData> | undefined;
    if (job === undefined) return undefined;
    job.data = taskData(job.data);
    return attemptOf(job) === claim.attempt ? { job, q } : undefined;
  }

  /** Replaces a job's data only while the claim holds its lock. */
  private async updateIfHeld(q: Queue, job: Job<TaskData>, token: string, data: TaskData): Promise<boolean> {
    const jobId = job.id as string;
    return (await this.redis.sfUpdateIfHeld(this.lockKey(q, jobId), q.toKey(jobId), token, JSON.stringify(data))) === 1;
  }

  private async releaseKey(job: Job<TaskData>, id: string): Promise<void> {
    const key = job.data.uniqueKey;
    if (key === null || key === undefined) return;
    const k = this.uniqueKey(job.queueName, key);
    if ((await this.redis.get(k)) === id) await this.redis.del(k);
  }

  /** The token is unique to its claim, so a lock it holds proves the claim current: BullMQ refuses every move without it. */
  private async record(o: TaskOutcomeRecord): Promise<boolean> {
    const found = await this.jobOf(o);
    if (found === undefined) return false;
    const { job, q } = found;
    const token = o.claimant;
    // The history is written, while the claim holds, just before the move that records the outcome (BullMQ has no transaction spanning both).
    const data = withAttempt(job.data, {
      attempt: o.attempt,
      outcome: o.status,
      error: o.status === 'success' ? null : o.error,
      durationMs: o.durationMs === undefined ? null : Math.round(o.durationMs),
      owner: ownerOf(token),
      finishedAt: Date.now(),
    });
    try {
      if (o.status === 'success') {
        if (!(await this.updateIfHeld(q, job, token, data))) return false;
        await job.moveToCompleted('success', token, false);
        await this.releaseKey(job, o.id);
      } else if (o.retryAt !== undefined) {
        if (!(await this.updateIfHeld(q, job, token, { ...data, lastError: o.error }))) return false;
        await job.moveToDelayed(o.retryAt.getTime(), token);
      } else {
        if (!(await this.updateIfHeld(q, job, token, { ...data, lastError: o.error, outcome: o.status }))) return false;
        await job.moveToFailed(new Error(o.error), token, false);
        await this.releaseKey(job, o.id);
      }
      return true;
    } catch {
      // The lock was lost (lease expired, another node took the task): the outcome does not count.
      return false;
    }
  }

  async complete(outcomes: readonly TaskOutcomeRecord[]): Promise<string[]> {
    const done = (await Promise.all(outcomes.map(async (o) => ((await this.record(o)) ? o.id : undefined)))).filter(
      (id): id is string => id !== undefined,
    );
    // A task that ends makes room in a limited queue: its producers, held back, look again.
    const queues = new Set(done.map((id) => BullMQTaskStore.split(id)?.queue).filter((q): q is string => q !== undefined));
    for (const queue of queues)
      if ((await this.redis.exists(this.limitKey(queue, 'limits'))) === 1)
        await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, queue);
    return done;
  }

  async progress(claim: TaskClaim, progress: TaskProgress): Promise<boolean> {
    const json = checkProgress(progress);
    const found = await this.jobOf(claim);
    if (found === undefined) return false;
    return this.updateIfHeld(found.q, found.job, claim.claimant, { ...found.job.data, progress: JSON.parse(json) as TaskProgress });
  }

  async extendLeases(claims: readonly TaskClaim[], leaseMs: number): Promise<string[]> {
    const kept = await Promise.all(claims.map(async (c) => ((await this.relock(c, c.claimant, leaseMs, '')) ? c.id : undefined)));
    return kept.filter((id): id is string => id !== undefined);
  }

  async release(claims: readonly TaskClaim[]): Promise<string[]> {
    const released: string[] = [];
    for (const claim of claims) {
      const found = await this.jobOf(claim);
      if (found === undefined) continue;
      const { job, q } = found;
      // Not counted as an attempt: the base moves with the start BullMQ counted.
      if (!(await this.updateIfHeld(q, job, claim.claimant, { ...job.data, attemptBase: (job.data.attemptBase ?? 0) + 1 }))) continue;
      try {
        await job.moveToDelayed(Date.now(), claim.claimant);
        released.push(claim.id);
      } catch {
        // The lock lapsed in between: the stalled check takes the job back, counting the attempt the base no longer counts.
      }
    }
    return released;
  }

  /** Every active job whose lock token names `holder`, in the queues this process has used. */
  async releaseHeld(holder: string): Promise<string[]> {
    const held: TaskClaim[] = [];
    for (const [name, q] of this.queues) {
      const active = await this.redis.lrange(q.keys.active as string, 0, -1);
      if (active.length === 0) continue;
      const tokens = await this.redis.mget(active.map((jobId) => this.lockKey(q, jobId)));
      const mine = active.flatMap((jobId, i) => {
        const token = tokens[i];
        return typeof token === 'string' && ownerOf(token) === holder ? [{ jobId, token }] : [];
      });
      const attempts = await Promise.all(mine.map(({ jobId }) => this.redis.hget(q.toKey(jobId), 'sfAttempt')));
      mine.forEach(({ jobId, token }, i) => {
        held.push({ id: `${name}/${jobId}`, attempt: Number(attempts[i]), claimant: token });
      });
    }
    return this.release(held);
  }

  async recoverExpired(): Promise<number> {
    let recovered = 0;
    for (const [key, worker] of this.workers) {
      const queue = key.slice(0, key.indexOf('\u0000'));
      const q = this.queue(queue);
      const scripts = (worker as unknown as { scripts: { moveStalledJobsToWait(): Promise<[string[], string[]]> } }).scripts;
      const [failed, stalled] = await scripts.moveStalledJobsToWait();
      for (const [jobId, last] of [...failed.map((id) => [id, true] as const), ...stalled.map((id) => [id, false] as const)]) {
        const job = (await Job.fromId(q, jobId)) as Job<TaskData> | undefined;
        if (job === undefined) continue;
        job.data = taskData(job.data);
        const holder = (await this.redis.hget(q.toKey(jobId), 'sfHolder')) ?? '?';
        const lastError = last
          ? lapsedOnLastAttempt(holder, attemptOf(job), job.data.maxAttempts)
          : `lease of ${holder} expired: its node stopped or stalled`;
        const data = withAttempt(job.data, {
          // BullMQ counted the lost start: the attempt that was lost is the one it counted.
          attempt: attemptOf(job),
          outcome: 'lost',
          error: lastError,
          durationMs: null,
          owner: holder === '?' ? null : holder,
          finishedAt: Date.now(),
        });
        if (last) {
          await job.updateData({ ...data, lastError, outcome: 'error' });
          await this.releaseKey(job, `${queue}/${jobId}`);
        } else {
          await job.updateData({ ...data, lastError });
        }
      }
      recovered += failed.length + stalled.length;
    }
    return recovered;
  }

  async nextRunAt(queue: string): Promise<Date | null> {
    // A paused queue gives its producers no wake-up time: resume() wakes them.
    if (await this.queue(queue).isPaused()) return null;
    const [first] = (await this.queue(queue).getDelayed(0, 0)) as Job[];
    const delayed = first === undefined ? null : first.timestamp + first.delay;
    // Due tasks a rate-limited queue held back can start once its oldest start leaves the window.
    const opens = await this.redis.sfRateOpensAt(this.limitKey(queue, 'limits'), this.limitKey(queue, 'starts'));
    const at = opens < 0 ? delayed : delayed === null ? opens : Math.min(delayed, opens);
    return at === null ? null : new Date(at);
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

  /** `lock`: the lock token of a running job, which names its holder. */
  private toRecord(job: Job<TaskData>, state: string, lock: string | null = null): TaskRecord {
    const id = `${job.queueName}/${job.id}`;
    const data = taskData(job.data);
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
      leaseOwner: mapped === 'running' && lock !== null ? ownerOf(lock) : null,
      leaseExpiresAt: null,
      lastError: data.lastError ?? null,
      createdAt: new Date(job.timestamp),
      updatedAt: new Date(job.finishedOn ?? job.processedOn ?? job.timestamp),
      finishedAt: job.finishedOn === undefined ? null : new Date(job.finishedOn),
      progress: taskData(job.data).progress ?? null,
    };
  }

  /**
   * The jobs of a queue in `states` (default every one; a paused queue keeps
   * its waiting jobs in BullMQ's `paused` list); with `max`, at most the
   * newest `max` of each state; with `withLocks`, a running job's lock token.
   */
  private async jobsOf(
    queue: string,
    { withLocks = false, max, states = ['active', 'completed', 'failed', 'wait', 'paused', 'prioritized', 'delayed'] }: JobsOfOptions = {},
  ): Promise<{ job: Job<TaskData>; state: string; lock: string | null }[]> {
    const q = this.queue(queue);
    const out: { job: Job<TaskData>; state: string; lock: string | null }[] = [];
    for (const state of states) {
      const jobs = ((await q.getJobs([state], 0, max === undefined ? -1 : max - 1)) as (Job<TaskData> | undefined)[]).filter(
        (j): j is Job<TaskData> => j !== undefined,
      );
      const locks =
        withLocks && state === 'active' && jobs.length > 0 ? await this.redis.mget(jobs.map((j) => this.lockKey(q, j.id as string))) : [];
      jobs.forEach((job, i) => {
        out.push({ job, state, lock: locks[i] ?? null });
      });
    }
    return out;
  }

  async counts(): Promise<TaskCount[]> {
    const counts = new Map<string, number>();
    for (const queue of await this.knownQueues()) {
      // Running and succeeded map one to one: counted by BullMQ. Failed and waiting jobs are read,
      // as their data tells error from timeout, and cancelled from waiting.
      const direct = await this.queue(queue).getJobCounts('active', 'completed');
      if ((direct.active ?? 0) > 0) counts.set(`${queue}\u0000running`, direct.active ?? 0);
      if ((direct.completed ?? 0) > 0) counts.set(`${queue}\u0000success`, direct.completed ?? 0);
      for (const { job, state } of await this.jobsOf(queue, { states: ['failed', 'wait', 'paused', 'prioritized', 'delayed'] })) {
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

  /** Tasks matching a filter, newest first, from a scan of at most scanMax jobs per state and queue. */
  private async matching(filter: TaskFilter): Promise<TaskRecord[]> {
    const queues = filter.queue === undefined ? await this.knownQueues() : [filter.queue];
    const needle = filter.errorContains?.toLowerCase() ?? '';
    const records: TaskRecord[] = [];
    for (const queue of queues) {
      for (const { job, state, lock } of await this.jobsOf(queue, { withLocks: true, max: this.scanMax })) {
        const r = this.toRecord(job, state, lock);
        if (filter.state !== undefined && r.state !== filter.state) continue;
        if (filter.name !== undefined && r.name !== filter.name) continue;
        if (needle !== '' && !(r.lastError ?? '').toLowerCase().includes(needle)) continue;
        records.push(r);
      }
    }
    return records.sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime());
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
    const q = this.queue(where.queue);
    const job = (await Job.fromId(q, where.jobId)) as Job<TaskData> | undefined;
    if (job === undefined) return null;
    const state = await job.getState();
    return this.toRecord(job, state, state === 'active' ? await this.redis.get(this.lockKey(q, where.jobId)) : null);
  }

  async retry(ids: readonly string[]): Promise<string[]> {
    const changed: string[] = [];
    for (const id of ids) {
      const where = BullMQTaskStore.split(id);
      const job = where === undefined ? undefined : ((await Job.fromId(this.queue(where.queue), where.jobId)) as Job<TaskData> | undefined);
      if (job === undefined || where === undefined) continue;
      const state = await job.getState();
      const data: TaskData = { ...job.data, attemptBase: job.attemptsStarted, lastError: null, cancelled: false, progress: null };
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
