import { describeValue, FabricError } from '@stagefabric/runtime';
import type { EnqueueOptions, NewTask } from './task-store.js';

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
  const runAt = options.runAt ?? new Date(now + (options.delayMs ?? 0));
  return { queue, priority, maxAttempts, timeoutMs, runAt, uniqueKey, uniqueForMs };
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
