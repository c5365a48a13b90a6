import { randomUUID } from 'node:crypto';
import {
  FabricError,
  isTraceparent,
  type RedisConnectionOptions,
  redactError,
  redisConnectionOptions,
  redisPassword,
} from '@stagefabric/runtime';
import { Job, type JobsOptions, type JobType, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import type { PruneCount, RetentionPolicy, RetentionRule } from './retention.js';
import { checkSchedule, type ScheduleDefinition, type ScheduleRecord } from './schedules.js';
import { type StoredBackoff, storedBackoffProblem } from './task-backoff.js';
import {
  encodeEventBatches,
  followEvents,
  leaseLostEvent,
  type TaskEvent,
  type TaskEventsOptions,
  type TaskEventsOverflow,
} from './task-events.js';
import { type CheckedTask, checkLimits, checkProgress, checkTasks, TASK_DEFAULTS } from './task-input.js';
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
import { tracedEnqueue, traceFields } from './task-tracing.js';

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

/** One finished attempt as the store keeps it (JSON: dates as Unix milliseconds). */
interface StoredAttempt {
  readonly attempt: number;
  readonly outcome: TaskAttempt['outcome'];
  readonly error: string | null;
  readonly durationMs: number | null;
  readonly owner: string | null;
  readonly finishedAt: number;
  /** The run's span (W3C traceparent), on an attempt that was retried: the first one is what later attempts link to. */
  readonly trace?: string;
}

/** What an operator's cancel leaves in a job's history: not an attempt, the reason it failed. */
interface CancelMark {
  readonly outcome: 'cancelled';
  readonly finishedAt: number;
}

/**
 * History entries kept per job: the latest ones, so a job stays bounded.
 * BullMQ keeps a job's `stacktrace` (one entry per failed attempt, capped by
 * the job's `stackTraceLimit`); each entry here is one attempt's record as
 * JSON, written by the same script that moves the job, so an outcome and
 * its history are one step. A success's record is its `returnvalue`.
 */
const ATTEMPTS_KEPT = 100;

/** What a task carries in its BullMQ job's data: set at enqueue, never changed. */
interface TaskData {
  readonly args: unknown;
  readonly timeoutMs: number;
  readonly maxAttempts: number;
  readonly uniqueKey: string | null;
  /** W3C traceparent of the span that enqueued it. */
  readonly traceparent?: string;
  /** Its own backoff (enqueue option). */
  readonly backoff?: StoredBackoff;
}

/** A handler's progress as the store wraps it in BullMQ's progress field (`{ sf: … }`); anything else is not a handler's. */
function handlerProgress(progress: unknown): TaskProgress | null {
  return typeof progress === 'object' && progress !== null && 'sf' in progress ? ((progress as { sf: TaskProgress }).sf ?? null) : null;
}

/** A job added by a plain BullMQ producer carries its args as the whole data: read it as a task with default settings. */
function taskData(data: unknown): TaskData {
  const d = data as Partial<TaskData> | null;
  if (d !== null && typeof d === 'object' && 'args' in d && typeof d.timeoutMs === 'number' && typeof d.maxAttempts === 'number')
    return {
      args: d.args,
      timeoutMs: d.timeoutMs,
      maxAttempts: d.maxAttempts,
      uniqueKey: d.uniqueKey ?? null,
      ...(isTraceparent(d.traceparent) ? { traceparent: d.traceparent } : {}),
      // Written by another producer, perhaps: kept only when it is a backoff.
      ...(d.backoff !== undefined && storedBackoffProblem(d.backoff) === undefined ? { backoff: d.backoff } : {}),
    };
  return { args: data, timeoutMs: TASK_DEFAULTS.timeoutMs, maxAttempts: TASK_DEFAULTS.maxAttempts, uniqueKey: null };
}

/** The history entries of a job's stacktrace that are ours (a plain BullMQ failure's stack is not). */
function entriesOf(stacktrace: readonly string[] | null | undefined): (StoredAttempt | CancelMark)[] {
  const out: (StoredAttempt | CancelMark)[] = [];
  for (const line of stacktrace ?? []) {
    try {
      const e = JSON.parse(line) as Partial<StoredAttempt>;
      if (e !== null && typeof e === 'object' && typeof e.outcome === 'string' && typeof e.finishedAt === 'number')
        out.push(e as StoredAttempt | CancelMark);
    } catch {
      // Not ours: a stack trace written by another BullMQ worker.
    }
  }
  return out;
}

const isAttempt = (e: StoredAttempt | CancelMark): e is StoredAttempt => e.outcome !== 'cancelled';

/** The final state of a failed job: what its last history entry says (a lapsed lease fails as an error). */
function failedState(stacktrace: readonly string[] | null | undefined): TaskState {
  const last = entriesOf(stacktrace).at(-1);
  return last === undefined || last.outcome === 'lost' || last.outcome === 'success' ? 'error' : last.outcome;
}

// Our priorities (lower first, 0 default) onto BullMQ's (1 highest .. 2^21): every job prioritized, so one order holds.
const PRIORITY_OFFSET = 1_000_001;

/** The given job ids (a schedule's fire has one of its own), random ones where absent. */
const ids = (n: number, jobIds: readonly string[]): string[] => Array.from({ length: n }, (_, i) => jobIds[i] ?? randomUUID());

/** A lock token names its claimant's owner, then a nonce unique to the claim: `owner:uuid`. */
const NONCE_CHARS = 37;
const tokenFor = (owner: string): string => `${owner}:${randomUUID()}`;
const ownerOf = (token: string): string => (token.length > NONCE_CHARS ? token.slice(0, -NONCE_CHARS) : token);

/*
 * The transitions BullMQ's public API has no single call for, each one Lua
 * script, so each is one atomic step: a crash of the caller leaves the job
 * before or after it, never between. They act on BullMQ 6's key layout as
 * its own scripts do (checked against 6.7.6): a job waits due in the
 * delayed set (score = due ms * 0x1000), from where BullMQ's own next fetch
 * promotes it by priority; a failed job is in the failed set with
 * finishedOn; the unique key is BullMQ's deduplication key (`de:<id>`, the
 * job's `deid`), released only while it still names the job.
 */

/** Lua: appends one history entry to a job's stacktrace, keeping the latest ARGV-given count. */
const APPEND_ENTRY = `local function appendEntry(jobKey, entry, kept)
  local raw = redis.call('HGET', jobKey, 'stacktrace')
  local list = {}
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then list = decoded end
  end
  table.insert(list, entry)
  while #list > kept do table.remove(list, 1) end
  redis.call('HSET', jobKey, 'stacktrace', cjson.encode(list))
end
local function releaseUnique(queuePrefix, jobKey, jobId)
  local deid = redis.call('HGET', jobKey, 'deid')
  if deid then
    local de = queuePrefix .. 'de:' .. deid
    if redis.call('GET', de) == jobId then redis.call('DEL', de) end
  end
end
local function markFinal(timeoutKey, cancelledKey, jobId, state, now)
  redis.call('ZREM', timeoutKey, jobId)
  redis.call('ZREM', cancelledKey, jobId)
  if state == 'timeout' then redis.call('ZADD', timeoutKey, now, jobId) end
  if state == 'cancelled' then redis.call('ZADD', cancelledKey, now, jobId) end
end
local function dueNow(delayedKey, markerKey, jobId, now)
  redis.call('ZADD', delayedKey, now * 0x1000, jobId)
  local first = redis.call('ZRANGE', delayedKey, 0, 0, 'WITHSCORES')
  if first[2] then redis.call('ZADD', markerKey, math.floor(tonumber(first[2]) / 0x1000), '1') end
end
`;

/**
 * Moves a lock from one token to another (or the same: an extension) while
 * the claim holds it (its token, its attempt), like BullMQ's extendLock;
 * records who holds it (`pb`, BullMQ's processedBy), so a lapsed lease can name its holder.
 * KEYS: lock, job hash. ARGV: token, new token, lease ms, holder ('' keeps it), attempt.
 */
const RELOCK = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'ats') ~= ARGV[5] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'pb', ARGV[4]) end
return 1`;

/**
 * A claim that never started goes back to waiting, its start not counted:
 * while the claim holds the lock, in the same step, the lock goes, the start
 * BullMQ counted is taken back and the job is due again now. Returns the
 * job's name when released, 0 when the claim was not current.
 * KEYS: lock, active, delayed, marker, job hash, events. ARGV: token, job id, now ms, attempt.
 */
const RELEASE = `${APPEND_ENTRY}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[5], 'ats') ~= ARGV[4] then return 0 end
if redis.call('LREM', KEYS[2], 1, ARGV[2]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[5], 'ats', -1)
redis.call('HSET', KEYS[5], 'delay', 0)
dueNow(KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[3]))
redis.call('XADD', KEYS[6], 'MAXLEN', '~', 10000, '*', 'event', 'delayed', 'jobId', ARGV[2], 'delay', ARGV[3])
return redis.call('HGET', KEYS[5], 'name') or ''`;

/**
 * Lease recovery: each active job (of the first ARGV[3]) whose lock lapsed
 * goes, in one step with its 'lost' history entry and lastError, back to
 * waiting, or to failed with its unique key released when that was its last attempt (an error: see FINAL_MARKS).
 * Returns each job recovered as { id, name, attempt, 1 if failed for good else 0, error }.
 * KEYS: active, delayed, failed, marker, events, timeout marks, cancelled marks.
 * ARGV: queue key prefix, now ms, scan limit, default maxAttempts, entries kept.
 */
const RECOVER = `${APPEND_ENTRY}
local now = tonumber(ARGV[2])
local recovered = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)) do
  local jobKey = ARGV[1] .. id
  if redis.call('EXISTS', jobKey .. ':lock') == 0 and redis.call('EXISTS', jobKey) == 1 then
    local f = redis.call('HMGET', jobKey, 'ats', 'data', 'pb', 'name')
    local attempt = tonumber(f[1]) or 0
    local maxAttempts = tonumber(ARGV[4])
    local ok, data = pcall(cjson.decode, f[2] or '')
    if ok and type(data) == 'table' and type(data['maxAttempts']) == 'number' then maxAttempts = data['maxAttempts'] end
    local holder = f[3] or '?'
    local last = attempt >= maxAttempts
    local err
    if last then
      err = 'lease of ' .. holder .. ' expired on its last attempt (' .. attempt .. ' of ' .. maxAttempts .. '): its node stopped or stalled'
    else
      err = 'lease of ' .. holder .. ' expired: its node stopped or stalled'
    end
    local owner = cjson.null
    if f[3] then owner = f[3] end
    appendEntry(jobKey, cjson.encode({ attempt = attempt, outcome = 'lost', error = err, durationMs = cjson.null, owner = owner, finishedAt = now }), tonumber(ARGV[5]))
    redis.call('LREM', KEYS[1], 1, id)
    redis.call('HSET', jobKey, 'failedReason', err)
    if last then
      redis.call('ZADD', KEYS[3], now, id)
      markFinal(KEYS[6], KEYS[7], id, 'error', now)
      redis.call('HSET', jobKey, 'finishedOn', now)
      releaseUnique(ARGV[1], jobKey, id)
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'event', 'failed', 'jobId', id, 'failedReason', err, 'prev', 'active')
    else
      redis.call('HSET', jobKey, 'delay', 0)
      dueNow(KEYS[2], KEYS[4], id, now)
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', 10000, '*', 'event', 'stalled', 'jobId', id)
    end
    local final = 0
    if last then final = 1 end
    table.insert(recovered, { id, f[4] or '', attempt, final, err })
  end
end
return recovered`;

/**
 * An operator's cancel of a waiting job: it leaves the waiting sets for the
 * failed set with a 'cancelled' history entry, and its unique key is
 * released, in one step. KEYS: job hash, wait, paused, prioritized, delayed, failed, events, timeout marks, cancelled marks.
 * ARGV: job id, now ms, queue key prefix, entries kept.
 */
const CANCEL = `${APPEND_ENTRY}
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local id = ARGV[1]
local removed = redis.call('LREM', KEYS[2], 0, id) + redis.call('LREM', KEYS[3], 0, id) + redis.call('ZREM', KEYS[4], id) + redis.call('ZREM', KEYS[5], id)
if removed == 0 then return 0 end
local now = tonumber(ARGV[2])
appendEntry(KEYS[1], cjson.encode({ outcome = 'cancelled', finishedAt = now }), tonumber(ARGV[4]))
redis.call('ZADD', KEYS[6], now, id)
markFinal(KEYS[8], KEYS[9], id, 'cancelled', now)
redis.call('HSET', KEYS[1], 'finishedOn', now)
releaseUnique(ARGV[3], KEYS[1], id)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', 10000, '*', 'event', 'failed', 'jobId', id, 'failedReason', 'cancelled', 'prev', 'waiting')
return 1`;

/**
 * A claim of up to ARGV[4] jobs in one step, as BullMQ's move to active
 * takes one (promotes due delayed jobs, then the wait list, then by
 * priority; a lock per job with its own token, processedOn, processedBy,
 * the start counted, an 'active' event). A queue BullMQ limits (rate
 * limiter, global concurrency) returns -1: BullMQ's own fetch serves it.
 * A queue Stagefabric limits (setLimits) takes at most the room its limits
 * leave: its concurrency against the active jobs (and rooms BullMQ's fetch
 * holds), its rate against a sliding log of starts, on Redis's clock.
 * KEYS: wait, active, prioritized, delayed, meta, events, pc, marker, limits, rooms, starts.
 * ARGV: queue key prefix, now ms, lease ms, count, owner, then one token per job.
 * Returns per job: id, name, data, timestamp, ats, token, and Redis's time when limited (else '').
 */
const CLAIM = `local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local meta = redis.call('HMGET', KEYS[5], 'paused', 'concurrency', 'max')
if meta[1] then return {} end
if meta[2] or meta[3] then return -1 end
local count = tonumber(ARGV[4])
local lim = redis.call('HMGET', KEYS[9], 'concurrency', 'rateMax', 'rateIntervalMs')
local conc, rmax, rint = tonumber(lim[1] or ''), tonumber(lim[2] or ''), tonumber(lim[3] or '')
local at = ''
if conc ~= nil or rmax ~= nil then
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  at = tostring(clock)
  if conc ~= nil then
    redis.call('ZREMRANGEBYSCORE', KEYS[10], '-inf', clock)
    count = math.min(count, conc - redis.call('LLEN', KEYS[2]) - redis.call('ZCARD', KEYS[10]))
  end
  if rmax ~= nil then
    redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', clock - rint)
    count = math.min(count, rmax - redis.call('ZCARD', KEYS[11]))
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[4], 0, (now + 1) * 0x1000 - 1, 'LIMIT', 0, 1000)
if #due > 0 then
  redis.call('ZREM', KEYS[4], unpack(due))
  for _, id in ipairs(due) do
    local priority = tonumber(redis.call('HGET', prefix .. id, 'priority')) or 0
    if priority == 0 then
      redis.call('LPUSH', KEYS[1], id)
    else
      redis.call('ZADD', KEYS[3], priority * 0x100000000 + redis.call('INCR', KEYS[7]) % 0x100000000, id)
    end
    redis.call('XADD', KEYS[6], '*', 'event', 'waiting', 'jobId', id, 'prev', 'delayed')
    redis.call('HSET', prefix .. id, 'delay', 0)
  end
end
local out = {}
for i = 1, count do
  local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if id and string.sub(id, 1, 2) == '0:' then
    redis.call('LREM', KEYS[2], 1, id)
    id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  end
  if not id then
    local top = redis.call('ZPOPMIN', KEYS[3])
    if #top > 0 then
      id = top[1]
      redis.call('LPUSH', KEYS[2], id)
    end
  end
  if not id then break end
  local jobKey = prefix .. id
  local token = ARGV[5 + i]
  redis.call('SET', jobKey .. ':lock', token, 'PX', ARGV[3])
  redis.call('XADD', KEYS[6], '*', 'event', 'active', 'jobId', id, 'prev', 'waiting')
  redis.call('HSET', jobKey, 'processedOn', now, 'pb', ARGV[5])
  local ats = redis.call('HINCRBY', jobKey, 'ats', 1)
  local f = redis.call('HMGET', jobKey, 'name', 'data', 'timestamp')
  table.insert(out, { id, f[1] or '', f[2] or '{}', f[3] or '0', ats, token, at })
  if rmax ~= nil then redis.call('ZADD', KEYS[11], at, token) end
end
if rmax ~= nil then redis.call('PEXPIRE', KEYS[11], rint) end
if #out > 0 then redis.call('ZADD', KEYS[8], 0, '0') end
return out`;

/**
 * Successes in one step each, a batch in one call, as BullMQ's move to
 * completed records one: while the claim holds the lock in its attempt, the
 * lock goes, the job leaves active for completed (finishedOn, returnvalue:
 * the attempt's record, attemptsMade), its unique key is released and a
 * 'completed' event is added. A job BullMQ must finish itself (a flow
 * child, a deduplicated next job waiting on it) answers 2.
 * KEYS: active, completed, events, stalled. ARGV: queue key prefix, now ms, then per job: id, token, attempt, record JSON.
 * Returns per job: 1 recorded, 0 not current, 2 left to BullMQ.
 */
const COMPLETE = `${APPEND_ENTRY}
local prefix = ARGV[1]
local now = ARGV[2]
local out = {}
for i = 3, #ARGV, 4 do
  local id, token, attempt, record = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local jobKey = prefix .. id
  local f = redis.call('HMGET', jobKey, 'ats', 'parentKey', 'parent', 'deid')
  local result = 0
  if redis.call('GET', jobKey .. ':lock') == token and f[1] == attempt then
    if f[2] or f[3] or (f[4] and redis.call('EXISTS', prefix .. 'dn:' .. f[4]) == 1) then
      result = 2
    elseif redis.call('LREM', KEYS[1], -1, id) == 1 then
      redis.call('DEL', jobKey .. ':lock')
      redis.call('SREM', KEYS[4], id)
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('HSET', jobKey, 'returnvalue', record, 'finishedOn', now)
      redis.call('HINCRBY', jobKey, 'atm', 1)
      releaseUnique(prefix, jobKey, id)
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'event', 'completed', 'jobId', id, 'returnvalue', record, 'prev', 'active')
      result = 1
    end
  end
  table.insert(out, result)
end
return out`;

/** Whether a schedule still exists and has not fired at or after this time. KEYS: definitions, fires. ARGV: name, fire ms. */
const FIRE_DUE = `if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then return 0 end
return 1`;

/** Moves a schedule's last fire forward to this time, only forward. KEYS: definitions, fires. ARGV: name, fire ms. */
const FIRE = `if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last and tonumber(last) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
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

/** A running job's progress, while the claim holds its lock in its attempt. KEYS: lock, job hash. ARGV: token, attempt, progress JSON. */
const PROGRESS = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'ats') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'progress', ARGV[3])
return 1`;

/*
 * FINAL_MARKS. BullMQ keeps error, timeout and cancelled jobs in one failed
 * set; a job's final state is in its history. So that counts() need not read
 * every failed job, a job failed as a timeout or cancelled is also a member
 * of a marks set of its queue (`stagefabric-timeout:<queue>`,
 * `stagefabric-cancelled:<queue>`), and a failed job in neither is an error:
 * counts are ZCARD and ZINTERCARD of the failed set with each marks set
 * (COUNT_FAILED), exact, at a cost in Redis of the marks, not of the failed
 * jobs. Each move into the failed set writes the job's marks: RECOVER and
 * CANCEL in their own step; a failure through BullMQ's move (moveToFailed,
 * whose script is BullMQ's) right before it, by MARK_FINAL while the claim
 * still holds the job's lock. If the move then fails, the job was either not
 * moved (a mark on a job outside the failed set counts for nothing) or moved
 * by lease recovery after the lock lapsed, which writes the marks again. A
 * retried job keeps its old marks until its next move into failed rewrites
 * them; retention removes the marks of the jobs it deletes.
 */

/** The marks of a job about to fail for good, while the claim holds its lock. KEYS: lock, job hash, timeout marks, cancelled marks. ARGV: token, attempt ('' any), state, job id, now ms. */
const MARK_FINAL = `${APPEND_ENTRY}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'ats') ~= ARGV[2] then return 0 end
markFinal(KEYS[3], KEYS[4], ARGV[4], ARGV[3], tonumber(ARGV[5]))
return 1`;

/** A queue's failed jobs, and how many of them are timeouts and cancelled (FINAL_MARKS), in one step. KEYS: failed, timeout marks, cancelled marks. */
const COUNT_FAILED = `return { redis.call('ZCARD', KEYS[1]), redis.call('ZINTERCARD', 2, KEYS[1], KEYS[2]), redis.call('ZINTERCARD', 2, KEYS[1], KEYS[3]) }`;

/** How long a room taken in a limited queue is kept for its fetch; a node that dies between the two frees it after this. */
const ROOM_TTL_MS = 30_000;

interface StoreScripts {
  sfFireDue(definitions: string, fires: string, name: string, fireMs: number): Promise<number>;
  sfFire(definitions: string, fires: string, name: string, fireMs: number): Promise<number>;
  sfClaim(...args: (string | number)[]): Promise<(string | number)[][] | -1>;
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
  sfProgress(lock: string, job: string, token: string, attempt: string, progress: string): Promise<number>;
  sfMarkFinal(
    lock: string,
    job: string,
    timeoutMarks: string,
    cancelledMarks: string,
    token: string,
    attempt: string,
    state: TaskState,
    jobId: string,
    now: number,
  ): Promise<number>;
  sfCountFailed(failed: string, timeoutMarks: string, cancelledMarks: string): Promise<[number, number, number]>;
  sfComplete(...args: (string | number)[]): Promise<number[]>;
  sfRelock(lock: string, job: string, token: string, next: string, leaseMs: number, holder: string, attempt: string): Promise<number>;
  sfRelease(
    lock: string,
    active: string,
    delayed: string,
    marker: string,
    job: string,
    events: string,
    token: string,
    jobId: string,
    now: number,
    attempt: string,
  ): Promise<number | string>;
  sfRecover(
    active: string,
    delayed: string,
    failed: string,
    marker: string,
    events: string,
    timeoutMarks: string,
    cancelledMarks: string,
    queuePrefix: string,
    now: number,
    limit: number,
    defaultMaxAttempts: number,
    kept: number,
  ): Promise<[id: string, name: string, attempt: number, final: number, error: string][]>;
  sfCancel(
    job: string,
    wait: string,
    paused: string,
    prioritized: string,
    delayed: string,
    failed: string,
    events: string,
    timeoutMarks: string,
    cancelledMarks: string,
    jobId: string,
    now: number,
    queuePrefix: string,
    kept: number,
  ): Promise<number>;
}

interface JobsOfOptions {
  readonly withLocks?: boolean;
  readonly max?: number;
  readonly states?: readonly JobType[];
}

/** Active jobs one recovery pass looks at, per queue: it runs again on the next pass. */
const RECOVER_SCAN = 1000;

/**
 * The task store on Redis through BullMQ: tasks are BullMQ jobs of a queue
 * per task queue, claimed by demand (Worker.getNextJob, no processing loop of
 * BullMQ's own), locks as leases. Outcomes, retries and their backoff are the
 * task runner's, so jobs are added with one BullMQ attempt and a retry is
 * BullMQ's own delayed retry with the runner's delay. Task ids are
 * `queue/jobId`. A claim's claimant is its lock token, so any process of the
 * fabric can extend, complete or release it: nothing of a claim lives in
 * this process.
 *
 * Every transition is one atomic step: enqueue is BullMQ's add with its
 * deduplication as the unique key (reserved in the script that adds the
 * job; a key whose job vanished is recovered by the next add); success and
 * failure are BullMQ's moves, which release the key in the same script; a
 * retry is BullMQ's move to delayed; release, lease recovery and cancel are
 * one script each (above).
 */
export class BullMQTaskStore implements TaskStore {
  private readonly prefix: string;
  private readonly redis: Redis & StoreScripts;
  private subscriber: Redis | undefined;
  private readonly queues = new Map<string, Queue>();
  private readonly workers = new Map<string, Worker>();
  private readonly listeners = new Map<string, Set<() => void>>();
  /** Queues this store claimed under Stagefabric's limits: their producers are woken as their tasks end. */
  private readonly limitedQueues = new Set<string>();
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
    const redis = new Redis(this.connection);
    redis.defineCommand('sfRelock', { numberOfKeys: 2, lua: RELOCK });
    redis.defineCommand('sfRelease', { numberOfKeys: 6, lua: RELEASE });
    redis.defineCommand('sfRecover', { numberOfKeys: 7, lua: RECOVER });
    redis.defineCommand('sfCancel', { numberOfKeys: 9, lua: CANCEL });
    redis.defineCommand('sfMarkFinal', { numberOfKeys: 4, lua: MARK_FINAL });
    redis.defineCommand('sfCountFailed', { numberOfKeys: 3, lua: COUNT_FAILED });
    redis.defineCommand('sfClaim', { numberOfKeys: 11, lua: CLAIM });
    redis.defineCommand('sfTakeRoom', { numberOfKeys: 4, lua: TAKE_ROOM });
    redis.defineCommand('sfGiveBackRoom', { numberOfKeys: 2, lua: GIVE_BACK_ROOM });
    redis.defineCommand('sfRateOpensAt', { numberOfKeys: 2, lua: RATE_OPENS_AT });
    redis.defineCommand('sfProgress', { numberOfKeys: 2, lua: PROGRESS });
    redis.defineCommand('sfComplete', { numberOfKeys: 4, lua: COMPLETE });
    redis.defineCommand('sfFireDue', { numberOfKeys: 2, lua: FIRE_DUE });
    redis.defineCommand('sfFire', { numberOfKeys: 2, lua: FIRE });
    // defineCommand adds the methods at run time; StoreScripts names them for the compiler.
    this.redis = redis as Redis & StoreScripts;
    this.redis.on('error', this.onError);
    this.maxPayloadBytes = options.maxPayloadBytes ?? TASK_DEFAULTS.maxPayloadBytes;
    this.scanMax = options.scanMax ?? 10_000;
  }

  /**
   * Commands issued in one turn of the event loop go out as one write: a
   * claim's fetches and a batch's outcomes are many small scripts at once.
   */
  private get connection() {
    return { ...this.connectionOptions, maxRetriesPerRequest: null, enableAutoPipelining: true };
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

  /** A Worker per queue, lease and owner: BullMQ's move to active records the worker's name (the owner) as the job's holder in the same step. */
  private worker(queue: string, leaseMs: number, owner: string): Worker {
    const key = `${queue}\u0000${leaseMs}\u0000${owner}`;
    let w = this.workers.get(key);
    if (w === undefined) {
      // No processor and no autorun: jobs are fetched only when demand asks for them. Leases are
      // extended by the runner and recovered by recoverExpired, not by BullMQ's timers.
      w = new Worker(queue, null, {
        connection: this.connection,
        prefix: this.prefix,
        name: owner,
        autorun: false,
        lockDuration: leaseMs,
        skipStalledCheck: true,
        skipLockRenewal: true,
      });
      w.on('error', this.onError);
      this.workers.set(key, w);
    }
    return w;
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

  enqueue(tasks: readonly NewTask[]): Promise<EnqueueResult[]> {
    return this.add(tasks);
  }

  /** The key that holds a uniqueKey for its window (uniqueForMs): it expires by itself, finished or not. */
  private windowKey(queue: string, key: string): string {
    return `${this.prefix}:stagefabric-unique-window:${queue}:${key}`;
  }

  /** Enqueue with the given job ids (a schedule's fire has one of its own), random ones where absent. */
  private async add(tasks: readonly NewTask[], jobIds: readonly string[] = []): Promise<EnqueueResult[]> {
    const checked = checkTasks(tasks, this.maxPayloadBytes);
    const grouped = checked.findIndex((t) => t.group !== null);
    if (grouped >= 0)
      throw new FabricError(
        'SF_UNSUPPORTED',
        `task ${grouped} (${checked[grouped]?.name}): option group: the BullMQ task store does not keep groups (a BullMQ Pro feature); use the PostgreSQL or PGlite store`,
      );
    if (checked.length === 0) return [];
    return tracedEnqueue(checked, (traceparent) => this.addChecked(checked, ids(checked.length, jobIds), traceparent));
  }

  private async addChecked(
    checked: readonly CheckedTask[],
    ids: readonly string[],
    traceparent: string | undefined,
  ): Promise<EnqueueResult[]> {
    const byQueue = new Map<string, { index: number; jobId: string; job: { name: string; data: TaskData; opts: JobsOptions } }[]>();
    const results: EnqueueResult[] = [];
    // Keys held for a window are taken first (SET NX PX): one still held makes its task a duplicate of the holder.
    const held = new Set<number>();
    for (const [index, t] of checked.entries()) {
      if (t.uniqueForMs === null || t.uniqueKey === null) continue;
      const jobId = ids[index] as string;
      const key = this.windowKey(t.queue, t.uniqueKey);
      if ((await this.redis.set(key, `${t.queue}/${jobId}`, 'PX', t.uniqueForMs, 'NX')) === null) {
        results[index] = { id: (await this.redis.get(key)) ?? '', duplicate: true };
        held.add(index);
      }
    }
    checked.forEach((t, index) => {
      if (held.has(index)) return;
      const jobId = ids[index] as string;
      const list = byQueue.get(t.queue) ?? [];
      byQueue.set(t.queue, list);
      list.push({
        index,
        jobId,
        job: {
          name: t.name,
          data: {
            args: JSON.parse(t.args),
            timeoutMs: t.timeoutMs,
            maxAttempts: t.maxAttempts,
            uniqueKey: t.uniqueKey,
            ...(traceparent === undefined ? {} : { traceparent }),
            ...(t.backoff === null ? {} : { backoff: t.backoff }),
          },
          opts: {
            jobId,
            priority: t.priority + PRIORITY_OFFSET,
            delay: Math.max(0, t.runAt.getTime() - Date.now()),
            attempts: 1,
            stackTraceLimit: ATTEMPTS_KEPT,
            // The unique key is BullMQ's deduplication id: reserved in the script that adds the job, held until the job
            // finishes. No TTL: a key that expired while its task still waits would let a duplicate in.
            // A key held for a window is the window's, not BullMQ's: it must outlive the job's end.
            ...(t.uniqueKey === null || t.uniqueForMs !== null ? {} : { deduplication: { id: t.uniqueKey } }),
          },
        },
      });
    });
    await Promise.all(
      [...byQueue].map(async ([queue, list]) => {
        const added = await this.queue(queue).addBulk(list.map((e) => e.job));
        let fresh = false;
        const events: Omit<TaskEvent, 'at'>[] = [];
        added.forEach((job, i) => {
          const e = list[i] as (typeof list)[number];
          // A duplicate comes back as the pending job of its key.
          results[e.index] = { id: `${queue}/${job.id}`, duplicate: job.id !== e.jobId };
          fresh ||= job.id === e.jobId;
          if (job.id === e.jobId) events.push({ type: 'enqueued', id: `${queue}/${job.id}`, queue, name: job.name, attempt: 0 });
        });
        this.emit(events);
        if (fresh) await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, queue);
      }),
    );
    return results;
  }

  /** Claims up to `limit` jobs in one script (CLAIM); a queue BullMQ limits is served by BullMQ's own fetch. */
  async claim(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimedTask[]> {
    const claimed = await this.claimTasks(queue, limit, owner, leaseMs);
    this.emit(claimed.map((t) => ({ type: 'started', id: t.id, queue: t.queue, name: t.name, attempt: t.attempt })));
    return claimed;
  }

  private async claimTasks(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimedTask[]> {
    if (limit <= 0) return [];
    const q = this.queue(queue);
    const k = q.keys as Record<string, string>;
    const tokens = Array.from({ length: limit }, () => tokenFor(owner));
    const now = Date.now();
    const got = await this.redis.sfClaim(
      ...[k.wait, k.active, k.prioritized, k.delayed, k.meta, k.events, k.pc, k.marker].map((key) => key as string),
      this.limitKey(queue, 'limits'),
      this.limitKey(queue, 'rooms'),
      this.limitKey(queue, 'starts'),
      k[''] as string,
      now,
      leaseMs,
      limit,
      owner,
      ...tokens,
    );
    if (got === -1) return this.withFirstRuns(q, await this.claimByBullMQ(queue, limit, owner, leaseMs));
    const claimed = got.map(([id, name, data, timestamp, ats, token, at]): ClaimedTask => {
      const task = taskData(JSON.parse(String(data)));
      // A limited queue's claims are timed by Redis, as their starts were counted; its producers are woken as its tasks end.
      const claimedAt = at === '' || at === undefined ? now : Number(at);
      if (at !== '' && at !== undefined) this.limitedQueues.add(queue);
      return {
        id: `${queue}/${id}`,
        queue,
        name: String(name),
        args: task.args,
        attempt: Number(ats),
        claimant: String(token),
        maxAttempts: task.maxAttempts,
        timeoutMs: task.timeoutMs,
        enqueuedAt: new Date(Number(timestamp)),
        leaseExpiresAt: new Date(claimedAt + leaseMs),
        ...traceFields(task.traceparent, undefined),
        ...(task.backoff === undefined ? {} : { backoff: task.backoff }),
      };
    });
    return this.withFirstRuns(q, claimed);
  }

  /** Retries link to their task's first retried run, kept in its history: one pipelined read, for retried claims only. */
  private async withFirstRuns(q: Queue, claimed: ClaimedTask[]): Promise<ClaimedTask[]> {
    const retried = claimed.filter((c) => c.attempt > 1 && c.traceparent !== undefined);
    if (retried.length === 0) return claimed;
    const read = this.redis.pipeline();
    for (const c of retried) read.hget(q.toKey(c.id.slice(c.id.indexOf('/') + 1)), 'stacktrace');
    const replies = (await read.exec()) ?? [];
    const firstRuns = new Map<string, string>();
    retried.forEach((c, i) => {
      const [err, raw] = replies[i] ?? [new Error('no reply'), null];
      const first =
        err === null
          ? entriesOf(parseStacktrace(raw as string | null))
              .filter(isAttempt)
              .find((e) => isTraceparent(e.trace))
          : undefined;
      if (first?.trace !== undefined) firstRuns.set(c.id, first.trace);
    });
    return claimed.map((c) => {
      const firstRun = firstRuns.get(c.id);
      return firstRun === undefined ? c : { ...c, firstRunTraceparent: firstRun };
    });
  }

  /** A claim through BullMQ's Worker.getNextJob, one job per call: for queues with a rate limit or a global concurrency. */
  private async claimByBullMQ(queue: string, limit: number, owner: string, leaseMs: number): Promise<ClaimedTask[]> {
    const worker = this.worker(queue, leaseMs, owner);
    const q = this.queue(queue);
    // Ask only for what is there: waiting jobs, and a few probes when delayed ones may have come due.
    const counts = await q.getJobCounts('wait', 'prioritized', 'delayed');
    const ready = (counts.wait ?? 0) + (counts.prioritized ?? 0) + ((counts.delayed ?? 0) > 0 ? 10 : 0);
    let wanted = Math.min(limit, ready);
    if (wanted <= 0) return [];
    // Stagefabric's limits too, beside BullMQ's own: only as many fetches as the room they leave, taken atomically.
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
      this.limitedQueues.add(queue);
      const filled = fetched.filter((f) => f !== undefined).length;
      await this.redis.sfGiveBackRoom(this.limitKey(queue, 'rooms'), this.limitKey(queue, 'starts'), filled, ...rooms.names);
    }
    const claimed: ClaimedTask[] = [];
    for (const got of fetched) {
      if (got === undefined) continue;
      const { job, token } = got;
      const data = taskData(job.data);
      claimed.push({
        id: `${queue}/${job.id}`,
        queue,
        name: job.name,
        args: data.args,
        attempt: job.attemptsStarted,
        claimant: token,
        maxAttempts: data.maxAttempts,
        timeoutMs: data.timeoutMs,
        enqueuedAt: new Date(job.timestamp),
        leaseExpiresAt: new Date(Date.now() + leaseMs),
        ...traceFields(data.traceparent, undefined),
        ...(data.backoff === undefined ? {} : { backoff: data.backoff }),
      });
    }
    return claimed;
  }

  private limitKey(queue: string, what: 'limits' | 'rooms' | 'starts'): string {
    return `${this.prefix}:stagefabric-${what}:${queue}`;
  }

  /** The marks sets of a queue's failed jobs that are timeouts and cancelled (FINAL_MARKS). */
  private marksKeys(queue: string): [timeout: string, cancelled: string] {
    return [`${this.prefix}:stagefabric-timeout:${queue}`, `${this.prefix}:stagefabric-cancelled:${queue}`];
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

  async progress(claim: TaskClaim, progress: TaskProgress): Promise<boolean> {
    const json = checkProgress(progress);
    const where = BullMQTaskStore.split(claim.id);
    if (where === undefined || typeof claim.claimant !== 'string') return false;
    const q = this.queue(where.queue);
    // In BullMQ's own progress field, wrapped, so a plain BullMQ job's progress is not read as a handler's.
    const wrapped = `{"sf":${json}}`;
    const recorded =
      (await this.redis.sfProgress(this.lockKey(q, where.jobId), q.toKey(where.jobId), claim.claimant, String(claim.attempt), wrapped)) ===
      1;
    if (recorded) this.emit([{ type: 'progress', id: claim.id, queue: where.queue, attempt: claim.attempt, progress }]);
    return recorded;
  }

  /** Writes the marks of a job about to fail for good as `state` (FINAL_MARKS); false when `token` no longer holds its lock. */
  private async markFinal(q: Queue, jobId: string, token: string, attempt: string, state: TaskState): Promise<boolean> {
    const marked = await this.redis.sfMarkFinal(
      this.lockKey(q, jobId),
      q.toKey(jobId),
      ...this.marksKeys(q.name),
      token,
      attempt,
      state,
      jobId,
      Date.now(),
    );
    return marked === 1;
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
      q.toKey(where.jobId),
      claim.claimant,
      next,
      leaseMs,
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

  /**
   * Records outcomes. Successes: one COMPLETE script per queue for the
   * batch (each job's check, move and key release one step); a job only
   * BullMQ may finish goes through its own move. Failures: a pipelined read
   * of each claim's attempt and history, then BullMQ's move to failed, or to
   * delayed for a retry, which checks the lock token and writes the attempt's
   * record in the same script.
   */
  async complete(outcomes: readonly TaskOutcomeRecord[]): Promise<string[]> {
    const valid = outcomes.flatMap((o) => {
      const where = BullMQTaskStore.split(o.id);
      return where === undefined || typeof o.claimant !== 'string' ? [] : [{ o, q: this.queue(where.queue), jobId: where.jobId }];
    });
    const recordOf = (o: TaskOutcomeRecord): StoredAttempt => ({
      attempt: o.attempt,
      outcome: o.status,
      error: o.status === 'success' ? null : o.error,
      durationMs: o.durationMs === undefined ? null : Math.round(o.durationMs),
      owner: ownerOf(o.claimant),
      finishedAt: Date.now(),
      ...(isTraceparent(o.firstRunTraceparent) ? { trace: o.firstRunTraceparent } : {}),
    });
    const byQueue = new Map<Queue, typeof valid>();
    for (const v of valid) {
      if (v.o.status !== 'success') continue;
      const list = byQueue.get(v.q) ?? [];
      byQueue.set(v.q, list);
      list.push(v);
    }
    const [succeeded, failed] = await Promise.all([
      Promise.all(
        [...byQueue].map(async ([q, list]) => {
          const k = q.keys as Record<string, string>;
          const now = Date.now();
          const results = await this.redis.sfComplete(
            k.active as string,
            k.completed as string,
            k.events as string,
            k.stalled as string,
            k[''] as string,
            now,
            ...list.flatMap(({ o, jobId }) => [jobId, o.claimant, String(o.attempt), JSON.stringify(recordOf(o))]),
          );
          const recorded = list.filter((_, i) => results[i] === 1).map(({ o }) => o.id);
          const byBullMQ = await Promise.all(
            list
              .filter((_, i) => results[i] === 2)
              .map(async ({ o, q, jobId }) => {
                try {
                  const job = new Job<TaskData>(q, 'task', {} as TaskData, { attempts: 1, stackTraceLimit: ATTEMPTS_KEPT }, jobId);
                  await job.moveToCompleted(recordOf(o), o.claimant, false);
                  return o.id;
                } catch {
                  return undefined;
                }
              }),
          );
          return [...recorded, ...byBullMQ];
        }),
      ),
      this.fail(
        valid.filter((v) => v.o.status !== 'success'),
        recordOf,
      ),
    ]);
    const done = [...succeeded.flat(), ...failed].filter((id): id is string => id !== undefined);
    const byId = new Map(valid.map((v) => [v.o.id, v.o]));
    this.emit(
      done.flatMap((id): Omit<TaskEvent, 'at'>[] => {
        const o = byId.get(id);
        const queue = BullMQTaskStore.split(id)?.queue;
        if (o === undefined || queue === undefined) return [];
        if (o.status === 'success') return [{ type: 'succeeded', id, queue, attempt: o.attempt }];
        return [{ type: o.retryAt === undefined ? 'failed' : 'retried', id, queue, attempt: o.attempt, error: o.error }];
      }),
    );
    // A task that ends makes room in a limited queue: its producers, held back, look again.
    const limited = new Set(done.map((id) => BullMQTaskStore.split(id)?.queue).filter((q) => q !== undefined && this.limitedQueues.has(q)));
    for (const queue of limited) await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, queue as string);
    return done;
  }

  private async fail(
    list: readonly { o: TaskOutcomeRecord; q: Queue; jobId: string }[],
    recordOf: (o: TaskOutcomeRecord) => StoredAttempt,
  ): Promise<(string | undefined)[]> {
    if (list.length === 0) return [];
    const read = this.redis.pipeline();
    for (const { q, jobId } of list) read.hmget(q.toKey(jobId), 'ats', 'stacktrace');
    const fields = (await read.exec()) ?? [];
    return Promise.all(
      list.map(async ({ o, q, jobId }, i) => {
        if (o.status === 'success') return undefined;
        const [err, got] = fields[i] ?? [new Error('no reply'), null];
        const [ats, stacktrace] = (got as (string | null)[] | null) ?? [null, null];
        if (err !== null || ats !== String(o.attempt)) return undefined;
        // A retry is BullMQ's own: attempts left and a fixed backoff of the runner's delay move it to delayed.
        const opts: JobsOptions =
          o.retryAt === undefined
            ? { attempts: 1, stackTraceLimit: ATTEMPTS_KEPT }
            : {
                attempts: 2,
                stackTraceLimit: ATTEMPTS_KEPT,
                backoff: { type: 'fixed', delay: Math.max(0, o.retryAt.getTime() - Date.now()) },
              };
        const job = new Job<TaskData>(q, 'task', {} as TaskData, opts, jobId);
        job.stacktrace = parseStacktrace(stacktrace);
        const error = new Error(o.error);
        error.stack = JSON.stringify(recordOf(o));
        try {
          if (o.retryAt === undefined && !(await this.markFinal(q, jobId, o.claimant, String(o.attempt), o.status))) return undefined;
          await job.moveToFailed(error, o.claimant, false);
          return o.id;
        } catch {
          // The lock was lost (lease expired, another node took the task): the outcome does not count.
          return undefined;
        }
      }),
    );
  }

  async extendLeases(claims: readonly TaskClaim[], leaseMs: number): Promise<string[]> {
    const kept = await Promise.all(claims.map(async (c) => ((await this.relock(c, c.claimant, leaseMs, '')) ? c.id : undefined)));
    return kept.filter((id): id is string => id !== undefined);
  }

  async release(claims: readonly TaskClaim[]): Promise<string[]> {
    const now = Date.now();
    const released = await Promise.all(
      claims.map(async (claim) => {
        const where = BullMQTaskStore.split(claim.id);
        if (where === undefined || typeof claim.claimant !== 'string') return undefined;
        const q = this.queue(where.queue);
        const moved = await this.redis.sfRelease(
          this.lockKey(q, where.jobId),
          q.keys.active as string,
          q.keys.delayed as string,
          q.keys.marker as string,
          q.toKey(where.jobId),
          q.keys.events as string,
          claim.claimant,
          where.jobId,
          now,
          String(claim.attempt),
        );
        return typeof moved === 'string' ? { id: claim.id, queue: where.queue, attempt: claim.attempt, name: moved } : undefined;
      }),
    ).then((all) => all.filter((r) => r !== undefined));
    this.emit(
      released.map((r) => ({ type: 'released', id: r.id, queue: r.queue, attempt: r.attempt, ...(r.name === '' ? {} : { name: r.name }) })),
    );
    return released.map((r) => r.id);
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
      const attempts = await Promise.all(mine.map(({ jobId }) => this.redis.hget(q.toKey(jobId), 'ats')));
      mine.forEach(({ jobId, token }, i) => {
        held.push({ id: `${name}/${jobId}`, attempt: Number(attempts[i]), claimant: token });
      });
    }
    return this.release(held);
  }

  async recoverExpired(): Promise<number> {
    let recovered = 0;
    for (const [queue, q] of this.queues) {
      const jobs = await this.redis.sfRecover(
        q.keys.active as string,
        q.keys.delayed as string,
        q.keys.failed as string,
        q.keys.marker as string,
        q.keys.events as string,
        ...this.marksKeys(queue),
        q.keys[''] as string,
        Date.now(),
        RECOVER_SCAN,
        TASK_DEFAULTS.maxAttempts,
        ATTEMPTS_KEPT,
      );
      recovered += jobs.length;
      this.emit(
        jobs.map(([jobId, name, attempt, final, error]) =>
          leaseLostEvent(final === 1, {
            id: `${queue}/${jobId}`,
            queue,
            ...(name === '' ? {} : { name }),
            attempt: Number(attempt),
            error,
          }),
        ),
      );
    }
    return recovered;
  }

  async nextRunAt(queue: string): Promise<Date | null> {
    const q = this.queue(queue);
    // A paused queue gives its producers no wake-up time: resume() wakes them.
    if (await q.isPaused()) return null;
    // A delayed job's score is its due time in ms times 0x1000 (BullMQ's order within a millisecond).
    const [, score] = await this.redis.zrange(q.keys.delayed as string, 0, 0, 'WITHSCORES');
    const delayed = score === undefined ? null : Math.floor(Number(score) / 0x1000);
    if (!this.limitedQueues.has(queue)) return delayed === null ? null : new Date(delayed);
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

  /**
   * `lock`: the lock token of a running job, which names its holder.
   * `dueAt`: a delayed job's due time from the delayed set (ms), which a
   * retry's backoff sets and the job's own timestamp and delay do not say.
   */
  private toRecord(job: Job<TaskData>, state: string, lock: string | null = null, dueAt: number | null = null): TaskRecord {
    const id = `${job.queueName}/${job.id}`;
    const data = taskData(job.data);
    const mapped: TaskState =
      state === 'active' ? 'running' : state === 'completed' ? 'success' : state === 'failed' ? failedState(job.stacktrace) : 'waiting';
    return {
      id,
      queue: job.queueName,
      name: job.name,
      args: data.args,
      state: mapped,
      priority: (job.opts.priority ?? PRIORITY_OFFSET) - PRIORITY_OFFSET,
      attempt: job.attemptsStarted,
      maxAttempts: data.maxAttempts,
      timeoutMs: data.timeoutMs,
      runAt: new Date(dueAt ?? job.timestamp + (job.delay ?? 0)),
      uniqueKey: data.uniqueKey,
      leaseOwner: mapped === 'running' && lock !== null ? ownerOf(lock) : null,
      leaseExpiresAt: null,
      lastError: job.failedReason || null,
      createdAt: new Date(job.timestamp),
      updatedAt: new Date(job.finishedOn ?? job.processedOn ?? job.timestamp),
      finishedAt: job.finishedOn === undefined ? null : new Date(job.finishedOn),
      progress: handlerProgress(job.progress),
      ...(data.backoff === undefined ? {} : { backoff: data.backoff }),
    };
  }

  /**
   * The jobs of a queue in `states` (default every one); with `max`, at most
   * the newest `max` of each state; with `withLocks`, a running job's lock token.
   */
  private async jobsOf(
    queue: string,
    { withLocks = false, max, states = ['active', 'completed', 'failed', 'wait', 'prioritized', 'delayed'] }: JobsOfOptions = {},
  ): Promise<{ job: Job<TaskData>; state: string; lock: string | null; dueAt: number | null }[]> {
    const q = this.queue(queue);
    const out: { job: Job<TaskData>; state: string; lock: string | null; dueAt: number | null }[] = [];
    for (const state of states) {
      const jobs = ((await q.getJobs([state], 0, max === undefined ? -1 : max - 1)) as (Job<TaskData> | undefined)[]).filter(
        (j): j is Job<TaskData> => j !== undefined,
      );
      const locks =
        withLocks && state === 'active' && jobs.length > 0 ? await this.redis.mget(jobs.map((j) => this.lockKey(q, j.id as string))) : [];
      const dueAt = state === 'delayed' ? await this.dueTimes(q, jobs) : [];
      jobs.forEach((job, i) => {
        out.push({ job, state, lock: locks[i] ?? null, dueAt: dueAt[i] ?? null });
      });
    }
    return out;
  }

  async counts(): Promise<TaskCount[]> {
    const counts = new Map<string, number>();
    const add = (queue: string, state: TaskState, n: number) => {
      if (n > 0) counts.set(`${queue}\u0000${state}`, (counts.get(`${queue}\u0000${state}`) ?? 0) + n);
    };
    for (const queue of await this.knownQueues()) {
      // Counted by BullMQ where states map one to one; failed jobs told apart by their marks (FINAL_MARKS), none of them read.
      const q = this.queue(queue);
      const [c, [failed, timeout, cancelled]] = await Promise.all([
        q.getJobCounts('active', 'completed', 'wait', 'prioritized', 'delayed'),
        this.redis.sfCountFailed(q.keys.failed as string, ...this.marksKeys(queue)),
      ]);
      add(queue, 'running', c.active ?? 0);
      add(queue, 'success', c.completed ?? 0);
      add(queue, 'waiting', (c.wait ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0));
      add(queue, 'timeout', timeout);
      add(queue, 'cancelled', cancelled);
      add(queue, 'error', failed - timeout - cancelled);
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
      for (const { job, state, lock, dueAt } of await this.jobsOf(queue, { withLocks: true, max: this.scanMax })) {
        const r = this.toRecord(job, state, lock, dueAt);
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
    const history: StoredAttempt[] = entriesOf(job.stacktrace).filter(isAttempt);
    const success = job.returnvalue as unknown as StoredAttempt | null | undefined;
    if (success !== null && typeof success === 'object' && success.outcome === 'success') history.push(success);
    return history.slice(-ATTEMPTS_KEPT).map((a) => ({ ...a, finishedAt: new Date(a.finishedAt) }));
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
    const lock = state === 'active' ? await this.redis.get(this.lockKey(q, where.jobId)) : null;
    return this.toRecord(job, state, lock, state === 'delayed' ? (await this.dueTimes(q, [job]))[0] : null);
  }

  /** Delayed jobs' due times (ms), from the delayed set's scores (due time × 0x1000, BullMQ's order within a millisecond). */
  private async dueTimes(q: Queue, jobs: readonly Job[]): Promise<(number | null)[]> {
    const scores = await Promise.all(jobs.map((job) => this.redis.zscore(q.keys.delayed as string, job.id as string)));
    return scores.map((score) => (score === null ? null : Math.floor(Number(score) / 0x1000)));
  }

  /** Failed and cancelled tasks back to waiting, their attempts counted from zero again: BullMQ's retry, one script. */
  async retry(ids: readonly string[]): Promise<string[]> {
    const changed: string[] = [];
    for (const id of ids) {
      const where = BullMQTaskStore.split(id);
      const job = where === undefined ? undefined : ((await Job.fromId(this.queue(where.queue), where.jobId)) as Job<TaskData> | undefined);
      if (job === undefined || where === undefined) continue;
      try {
        await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
      } catch {
        // Not failed (any more): nothing to retry.
        continue;
      }
      // An operator's retry starts the task afresh: its handler's last progress goes.
      await this.redis.hdel(this.queue(where.queue).toKey(where.jobId), 'progress');
      changed.push(id);
      this.emit([{ type: 'retried', id, queue: where.queue, name: job.name, attempt: 0 }]);
      await this.redis.publish(`${this.prefix}:stagefabric-enqueued`, where.queue);
    }
    return changed;
  }

  async cancel(ids: readonly string[]): Promise<string[]> {
    const now = Date.now();
    const changed = await Promise.all(
      ids.map(async (id) => {
        const where = BullMQTaskStore.split(id);
        if (where === undefined) return undefined;
        const q = this.queue(where.queue);
        const k = q.keys;
        const moved = await this.redis.sfCancel(
          q.toKey(where.jobId),
          k.wait as string,
          k.paused as string,
          k.prioritized as string,
          k.delayed as string,
          k.failed as string,
          k.events as string,
          ...this.marksKeys(where.queue),
          where.jobId,
          now,
          k[''] as string,
          ATTEMPTS_KEPT,
        );
        return moved === 1 ? id : undefined;
      }),
    );
    return this.cancelled(changed.filter((id): id is string => id !== undefined));
  }

  private async cancelled(ids: string[]): Promise<string[]> {
    this.emit(
      ids.flatMap((id): Omit<TaskEvent, 'at'>[] => {
        const queue = BullMQTaskStore.split(id)?.queue;
        return queue === undefined ? [] : [{ type: 'cancelled', id, queue }];
      }),
    );
    return ids;
  }

  /**
   * Lifecycle events, published on the prefix's events channel right after
   * the change (see task-events.ts): a call's events in one message, sent
   * with the connection's next write and not waited for (the connection
   * keeps its commands in order, so a task's events stay in order). A
   * publish that fails is reported through onError.
   */
  private emit(events: readonly Omit<TaskEvent, 'at'>[]): void {
    if (events.length === 0) return;
    const channel = `${this.prefix}:stagefabric-events`;
    for (const payload of encodeEventBatches(events)) this.redis.publish(channel, payload).catch(this.onEmitError);
  }

  private readonly onEmitError = (error: Error) => this.onError(new Error(`task events not published: ${error.message}`));

  events(options?: TaskEventsOptions): AsyncIterable<TaskEvent | TaskEventsOverflow> {
    const channel = `${this.prefix}:stagefabric-events`;
    return followEvents(async (push) => {
      // A connection of its own per follower: a subscribed connection can do nothing else, and ends with it.
      const sub = this.redis.duplicate();
      sub.on('error', this.onError);
      sub.on('message', (_channel: string, payload: string) => push(payload));
      await sub.subscribe(channel);
      return async () => {
        sub.disconnect();
      };
    }, options);
  }

  /**
   * Retention through BullMQ's own clean (oldest first, at most the batch
   * per call). BullMQ keeps error, timeout and cancelled jobs in one failed
   * set, so they share one rule (refused otherwise); `maxCount` holds per
   * queue here, across queues on the SQL stores.
   */
  async pruneFinished(policy: Required<RetentionPolicy>, batchSize: number): Promise<PruneCount[]> {
    const same = (a: RetentionRule | false, b: RetentionRule | false) => JSON.stringify(a) === JSON.stringify(b);
    if (!same(policy.error, policy.timeout) || !same(policy.error, policy.cancelled)) {
      throw new FabricError(
        'SF_BAD_OPTION',
        'retention: the BullMQ task store keeps error, timeout and cancelled tasks in one failed set, so it prunes them by one rule: give the three the same rule (or false)',
      );
    }
    const sets: [TaskState[], 'completed' | 'failed', RetentionRule | false][] = [
      [['success'], 'completed', policy.success],
      [['error', 'timeout', 'cancelled'], 'failed', policy.error],
    ];
    const out: PruneCount[] = [];
    const queues = await this.knownQueues();
    for (const [states, set, rule] of sets) {
      if (rule === false) continue;
      let count = 0;
      for (const name of queues) {
        const q = this.queue(name);
        // Deleted jobs' marks go with them (a retried job can keep its old marks until it fails again, or completes).
        const cleaned = async (ids: string[]) => {
          if (ids.length > 0) await Promise.all(this.marksKeys(name).map((k) => this.redis.zrem(k, ...ids)));
          count += ids.length;
        };
        // clean's limit 0 means no limit: it is only called with room left in the batch.
        if (rule.maxAgeMs !== undefined && count < batchSize) await cleaned(await q.clean(rule.maxAgeMs, batchSize - count, set));
        if (rule.maxCount !== undefined && count < batchSize) {
          const excess = Math.min(((await q.getJobCounts(set))[set] ?? 0) - rule.maxCount, batchSize - count);
          if (excess > 0) await cleaned(await q.clean(0, excess, set));
        }
      }
      if (count > 0) out.push({ states, count });
    }
    return out;
  }

  /** Schedules: definitions, creation times and last fires, each a hash by schedule name. */
  private scheduleKeys(): [definitions: string, created: string, fires: string] {
    return [
      `${this.prefix}:stagefabric-schedules`,
      `${this.prefix}:stagefabric-schedules-created`,
      `${this.prefix}:stagefabric-schedule-fires`,
    ];
  }

  async defineSchedules(schedules: readonly ScheduleDefinition[]): Promise<void> {
    const checked = schedules.map((s, i) => checkSchedule(s, `schedule ${i}`));
    if (checked.length === 0) return;
    const [definitions, created] = this.scheduleKeys();
    const now = Date.now();
    const multi = this.redis.multi();
    for (const s of checked) {
      multi.hset(definitions, s.name, JSON.stringify({ cron: s.cron, tz: s.tz, task: s.task, backfill: s.backfill }));
      // A replaced schedule keeps when it was first made, so its fires go on from its last.
      multi.hsetnx(created, s.name, now);
    }
    await multi.exec();
  }

  async schedules(): Promise<ScheduleRecord[]> {
    const [definitionsKey, createdKey, firesKey] = this.scheduleKeys();
    const [definitions, created, fires] = await Promise.all([
      this.redis.hgetall(definitionsKey),
      this.redis.hgetall(createdKey),
      this.redis.hgetall(firesKey),
    ]);
    return Object.entries(definitions)
      .map(([name, json]): ScheduleRecord => {
        const d = JSON.parse(json) as Pick<ScheduleRecord, 'cron' | 'tz' | 'task' | 'backfill'>;
        const last = fires[name];
        return {
          name,
          ...d,
          lastFireAt: last === undefined ? null : new Date(Number(last)),
          createdAt: new Date(Number(created[name] ?? 0)),
        };
      })
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async removeSchedule(name: string): Promise<boolean> {
    const [definitions, created, fires] = this.scheduleKeys();
    const result = await this.redis.multi().hdel(definitions, name).hdel(created, name).hdel(fires, name).exec();
    return result?.[0]?.[1] === 1;
  }

  /**
   * Redis has no transaction spanning BullMQ's add and the last fire's move,
   * so the fire's job has an id of its own (`schedule-NAME-FIREMS`) and is
   * added before the move: schedulers racing on a fire add the same job,
   * which BullMQ adds once, and one of them moves the last fire. One that
   * stops in between leaves the fire to the next pass, which adds the same
   * job again, as a no-op.
   */
  async fireSchedule(name: string, fireAt: Date, task?: NewTask): Promise<EnqueueResult | 'skipped' | null> {
    const [definitions, , fires] = this.scheduleKeys();
    const fireMs = fireAt.getTime();
    let fired: EnqueueResult | undefined;
    if (task !== undefined) {
      if ((await this.redis.sfFireDue(definitions, fires, name, fireMs)) !== 1) return null;
      const jobId = `schedule-${name}-${fireMs}`;
      const [result] = await this.add([task], [jobId]);
      if (result === undefined) return null;
      const own = `${task.options?.queue ?? TASK_DEFAULTS.queue}/${jobId}`;
      // The same job added by another scheduler racing on this fire is this fire's, not a duplicate.
      fired = result.duplicate && result.id === own ? { id: own, duplicate: false } : result;
    }
    if ((await this.redis.sfFire(definitions, fires, name, fireMs)) !== 1) return null;
    return fired ?? 'skipped';
  }

  /**
   * An active job is failed as cancelled with the lock token it holds (read
   * from its lock), its history marked cancelled: the run's next extension
   * then finds the lock gone.
   */
  async cancelRunning(ids: readonly string[]): Promise<string[]> {
    const changed: string[] = [];
    for (const id of ids) {
      const where = BullMQTaskStore.split(id);
      if (where === undefined) continue;
      const q = this.queue(where.queue);
      const [token, stacktrace] = await Promise.all([
        this.redis.get(this.lockKey(q, where.jobId)),
        this.redis.hget(q.toKey(where.jobId), 'stacktrace'),
      ]);
      if (token === null) continue;
      const job = new Job<TaskData>(q, 'task', {} as TaskData, { attempts: 1, stackTraceLimit: ATTEMPTS_KEPT }, where.jobId);
      job.stacktrace = parseStacktrace(stacktrace);
      const error = new Error('cancelled while running');
      const mark: CancelMark = { outcome: 'cancelled', finishedAt: Date.now() };
      error.stack = JSON.stringify(mark);
      try {
        if (!(await this.markFinal(q, where.jobId, token, '', 'cancelled'))) continue;
        await job.moveToFailed(error, token, false);
        changed.push(id);
        await this.cancelled([id]);
      } catch {
        // The run finished or lost its lock in between: not cancelled by this.
      }
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

function parseStacktrace(raw: string | null | undefined): string[] {
  if (raw === null || raw === undefined) return [];
  try {
    const parsed = JSON.parse(raw) as unknown;
    return Array.isArray(parsed) ? parsed.filter((s): s is string => typeof s === 'string') : [];
  } catch {
    return [];
  }
}
