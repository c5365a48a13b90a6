import { describeValue, FabricError } from '@stagefabric/runtime';
import { type StoredBackoff, storedBackoff, storedBackoffProblem } from './task-backoff.js';
import type { EnqueueOptions, NewTask, QueueLimits, RateLimit, TaskProgress } from './task-store.js';

/** A task refused at enqueue; nothing of the batch was stored. */
export class TaskInputError extends FabricError {
  override readonly name = 'TaskInputError';

  constructor(message: string) {
    super('SF_BAD_TASK', message);
  }
}

export const TASK_DEFAULTS = {
  queue: 'default',
  priority: 0,
  maxAttempts: 5,
  timeoutMs: 30_000,
  /** Largest JSON encoding of one task's args. */
  maxPayloadBytes: 1024 * 1024,
} as const;

export interface CheckedTask {
  readonly queue: string;
  readonly name: string;
  /** JSON text of the args. */
  readonly args: string;
  readonly priority: number;
  readonly maxAttempts: number;
  readonly timeoutMs: number;
  readonly runAt: Date;
  readonly uniqueKey: string | null;
  /** How long the key is held from enqueue; null: until the task finishes. */
  readonly uniqueForMs: number | null;
  readonly group: string | null;
  /** The task's own backoff, its own fields only; null: its handler's. */
  readonly backoff: StoredBackoff | null;
}

/** Walks args for what JSON would silently drop or mangle: functions, symbols, BigInt, Map, Set, cycles. */
function checkSerializable(value: unknown, path: string, seen: Set<object>): string | undefined {
  switch (typeof value) {
    case 'function':
      return `${path} is a function`;
    case 'symbol':
      return `${path} is a symbol`;
    case 'bigint':
      return `${path} is a BigInt (send it as a string)`;
    case 'number':
      return Number.isFinite(value) ? undefined : `${path} is ${value}, which JSON cannot hold`;
    case 'object': {
      if (value === null || value instanceof Date) return undefined;
      if (value instanceof Map || value instanceof Set) return `${path} is a ${value.constructor.name} (JSON would store {})`;
      if (seen.has(value)) return `${path} refers back to itself (a cycle)`;
      seen.add(value);
      const entries = Array.isArray(value)
        ? value.map((v, i) => [`${path}[${i}]`, v] as const)
        : Object.entries(value).map(([k, v]) => [`${path}.${k}`, v] as const);
      for (const [p, v] of entries) {
        const problem = checkSerializable(v, p, seen);
        if (problem !== undefined) return problem;
      }
      seen.delete(value);
      return undefined;
    }
    default:
      return undefined;
  }
}

function checkOptions(where: string, options: EnqueueOptions, now: number): Omit<CheckedTask, 'name' | 'args'> {
  const fail = (option: string, value: unknown, rule: string): never => {
    throw new TaskInputError(`${where}: option ${option} = ${describeValue(value)}: ${rule}`);
  };
  const queue = options.queue ?? TASK_DEFAULTS.queue;
  if (typeof queue !== 'string' || queue.length === 0 || queue.length > 200)
    fail('queue', queue, 'must be a non-empty string of at most 200 characters');
  const priority = options.priority ?? TASK_DEFAULTS.priority;
  if (!Number.isInteger(priority) || Math.abs(priority) > 1_000_000) fail('priority', priority, 'must be an integer (lower runs first)');
  const maxAttempts = options.maxAttempts ?? TASK_DEFAULTS.maxAttempts;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000)
    fail('maxAttempts', maxAttempts, 'must be an integer from 1 to 1000');
  const timeoutMs = options.timeoutMs ?? TASK_DEFAULTS.timeoutMs;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 2_147_483_647)
    fail('timeoutMs', timeoutMs, 'must be a positive integer of milliseconds');
  if (options.runAt !== undefined && options.delayMs !== undefined) fail('runAt', options.runAt, 'give runAt or delayMs, not both');
  if (options.delayMs !== undefined && (typeof options.delayMs !== 'number' || !Number.isFinite(options.delayMs) || options.delayMs < 0)) {
    fail('delayMs', options.delayMs, 'must be a non-negative number of milliseconds');
  }
  if (options.runAt !== undefined && (!(options.runAt instanceof Date) || Number.isNaN(options.runAt.getTime())))
    fail('runAt', options.runAt, 'must be a valid Date');
  const uniqueKey = options.uniqueKey ?? null;
  if (uniqueKey !== null && (typeof uniqueKey !== 'string' || uniqueKey.length === 0))
    fail('uniqueKey', uniqueKey, 'must be a non-empty string');
  const uniqueForMs = options.uniqueForMs ?? null;
  if (uniqueForMs !== null) {
    if (!Number.isInteger(uniqueForMs) || uniqueForMs < 1 || uniqueForMs > 2_147_483_647)
      fail('uniqueForMs', uniqueForMs, 'must be a positive integer of milliseconds');
    if (uniqueKey === null) fail('uniqueForMs', uniqueForMs, 'needs a uniqueKey: it is how long that key is held');
  }
  const group = options.group ?? null;
  if (group !== null && (typeof group !== 'string' || group.length === 0 || group.length > 200))
    fail('group', group, 'must be a non-empty string of at most 200 characters');
  let backoff: StoredBackoff | null = null;
  if (options.backoff !== undefined) {
    const problem = storedBackoffProblem(options.backoff);
    if (problem !== undefined) throw new TaskInputError(`${where}: option ${problem}`);
    backoff = storedBackoff(options.backoff);
  }
  const runAt = options.runAt ?? new Date(now + (options.delayMs ?? 0));
  return { queue, priority, maxAttempts, timeoutMs, runAt, uniqueKey, uniqueForMs, group, backoff };
}

/** Checks a batch before anything is stored; the error names the task (by index and name) and the problem. */
export function checkTasks(tasks: readonly NewTask[], maxPayloadBytes: number = TASK_DEFAULTS.maxPayloadBytes): CheckedTask[] {
  const now = Date.now();
  return tasks.map((task, i) => {
    const where = `task ${i}${typeof task?.name === 'string' && task.name !== '' ? ` (${task.name})` : ''}`;
    if (typeof task !== 'object' || task === null)
      throw new TaskInputError(`${where}: expected { name, args?, options? }, got ${describeValue(task)}`);
    if (typeof task.name !== 'string' || task.name.length === 0 || task.name.length > 200) {
      throw new TaskInputError(`${where}: name must be a non-empty string of at most 200 characters, got ${describeValue(task.name)}`);
    }
    const problem = checkSerializable(task.args ?? null, 'args', new Set());
    if (problem !== undefined) throw new TaskInputError(`${where}: args cannot be stored: ${problem}`);
    const args = JSON.stringify(task.args ?? null);
    const bytes = Buffer.byteLength(args);
    if (bytes > maxPayloadBytes)
      throw new TaskInputError(`${where}: args are ${bytes} bytes as JSON, over the limit of ${maxPayloadBytes}`);
    return { name: task.name, args, ...checkOptions(where, task.options ?? {}, now) };
  });
}

const MAX_LIMIT = 1_000_000;
const MAX_INTERVAL_MS = 7 * 24 * 3600 * 1000;

/**
 * Checks a queue's limits; returns them with the empty ones dropped, or
 * null when nothing is limited. Errors name the queue, the limit and its rule.
 */
export function checkLimits(queue: string, limits: QueueLimits | null | undefined): QueueLimits | null {
  if (typeof queue !== 'string' || queue.length === 0 || queue.length > 200)
    throw new FabricError('SF_BAD_OPTION', `limits: queue ${describeValue(queue)} must be a non-empty string of at most 200 characters`);
  if (limits === null || limits === undefined) return null;
  const fail = (path: string, value: unknown, rule: string): never => {
    throw new FabricError('SF_BAD_OPTION', `limits of queue ${queue}: ${path} = ${describeValue(value)}: ${rule}`);
  };
  const known = (value: unknown, path: string, keys: readonly string[]) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, value, 'must be an object');
    for (const k of Object.keys(value as object))
      if (!keys.includes(k)) fail(`${path}.${k}`, (value as Record<string, unknown>)[k], `is not a limit (one of ${keys.join(', ')})`);
  };
  const count = (value: unknown, path: string): number | undefined => {
    if (value === undefined) return undefined;
    if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > MAX_LIMIT)
      fail(path, value, `must be an integer from 1 to ${MAX_LIMIT}`);
    return value as number;
  };
  const rate = (value: unknown, path: string): RateLimit | undefined => {
    if (value === undefined) return undefined;
    known(value, path, ['max', 'intervalMs']);
    const r = value as Record<string, unknown>;
    const max = count(r.max, `${path}.max`) ?? fail(`${path}.max`, r.max, 'is required');
    const intervalMs = r.intervalMs;
    if (!Number.isInteger(intervalMs) || (intervalMs as number) < 1 || (intervalMs as number) > MAX_INTERVAL_MS)
      fail(`${path}.intervalMs`, intervalMs, `must be an integer of milliseconds from 1 to ${MAX_INTERVAL_MS} (a week)`);
    return { max, intervalMs: intervalMs as number };
  };
  known(limits, 'limits', ['concurrency', 'rate', 'group']);
  const concurrency = count(limits.concurrency, 'concurrency');
  const queueRate = rate(limits.rate, 'rate');
  let group: QueueLimits['group'];
  if (limits.group !== undefined) {
    known(limits.group, 'group', ['concurrency', 'rate', 'ordered']);
    const gc = count(limits.group.concurrency, 'group.concurrency');
    const gr = rate(limits.group.rate, 'group.rate');
    const ordered = limits.group.ordered;
    if (ordered !== undefined && typeof ordered !== 'boolean') fail('group.ordered', ordered, 'must be true or false');
    if (ordered === true && gc !== undefined && gc !== 1)
      fail('group.concurrency', gc, 'must be 1 or left out with group.ordered (one task of a group at a time)');
    if (gc !== undefined || gr !== undefined || ordered === true)
      group = {
        ...(gc === undefined ? {} : { concurrency: gc }),
        ...(gr === undefined ? {} : { rate: gr }),
        ...(ordered === true ? { ordered } : {}),
      };
  }
  const out: QueueLimits = {
    ...(concurrency === undefined ? {} : { concurrency }),
    ...(queueRate === undefined ? {} : { rate: queueRate }),
    ...(group === undefined ? {} : { group }),
  };
  return Object.keys(out).length === 0 ? null : out;
}

/** Largest JSON encoding of a task's progress. */
export const MAX_PROGRESS_BYTES = 4096;

/** Checks a handler's progress; returns its JSON text. */
export function checkProgress(progress: TaskProgress): string {
  const fail = (rule: string): never => {
    throw new FabricError('SF_BAD_OPTION', `task progress ${describeValue(progress)}: ${rule}`);
  };
  if (typeof progress === 'number') {
    if (!Number.isFinite(progress) || progress < 0 || progress > 100) fail('a number must be a percentage from 0 to 100');
    return JSON.stringify(progress);
  }
  if (typeof progress !== 'object' || progress === null || Array.isArray(progress)) fail('must be a percentage or a JSON object');
  const problem = checkSerializable(progress, 'progress', new Set());
  if (problem !== undefined) fail(`cannot be stored: ${problem}`);
  const json = JSON.stringify(progress);
  if (Buffer.byteLength(json) > MAX_PROGRESS_BYTES)
    fail(`is ${Buffer.byteLength(json)} bytes as JSON, over the limit of ${MAX_PROGRESS_BYTES}`);
  return json;
}
