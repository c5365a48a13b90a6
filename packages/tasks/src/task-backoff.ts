import { backoffMs, describeValue, FabricError } from '@stagefabric/runtime';

/**
 * How long a failed attempt waits before the next, as a handler registers
 * it: a fixed delay, exponential with full jitter (the runner's default), or
 * a function of the attempt that failed (1 on the first) and its error.
 */
export type TaskBackoff =
  | { readonly type: 'fixed'; readonly delayMs: number }
  | { readonly type: 'exponential'; readonly baseMs?: number; readonly maxMs?: number }
  | ((attempt: number, error: string) => number);

/** Bounds of the exponential backoff. */
export interface BackoffOptions {
  /** First retry waits up to this. Default 1000 ms. */
  readonly baseMs?: number;
  /** No retry waits longer. Default 300 000 ms. */
  readonly maxMs?: number;
}

export const BACKOFF_DEFAULTS = { baseMs: 1000, maxMs: 300_000 } as const;

/** The longest wait a backoff may give: what a timer and a Postgres interval both hold. */
const MAX_DELAY_MS = 2_147_483_647;

const isDelay = (ms: unknown): ms is number => typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 && ms <= MAX_DELAY_MS;

/**
 * A backoff a task keeps with it (the enqueue option `backoff`): fixed or
 * exponential, as a handler's, but plain data, since it is stored with the
 * task. Used instead of its handler's when the task's attempt fails.
 */
export type StoredBackoff = Exclude<TaskBackoff, (attempt: number, error: string) => number>;

/** What is wrong with a backoff given as data: the field (`''` for the whole, `.delayMs` …), its value and the rule. */
interface BackoffProblem {
  readonly field: string;
  readonly value: unknown;
  readonly rule: string;
}

const DELAY_RULE = 'must be a number of milliseconds from 0 to 2147483647';
const FIELDS = { fixed: ['type', 'delayMs'], exponential: ['type', 'baseMs', 'maxMs'] } as const;

/** The first problem of a fixed or exponential backoff, or undefined; `strict` refuses fields the type does not have. */
function backoffProblem(backoff: unknown, strict: boolean): BackoffProblem | undefined {
  if (typeof backoff !== 'object' || backoff === null || Array.isArray(backoff))
    return { field: '', value: backoff, rule: "must be { type: 'fixed', delayMs } or { type: 'exponential', baseMs?, maxMs? }" };
  const b = backoff as Record<string, unknown>;
  if (b.type !== 'fixed' && b.type !== 'exponential') return { field: '.type', value: b.type, rule: "must be 'fixed' or 'exponential'" };
  const known: readonly string[] = FIELDS[b.type];
  const extra = strict ? Object.keys(b).find((k) => !known.includes(k)) : undefined;
  if (extra !== undefined)
    return { field: `.${extra}`, value: b[extra], rule: `is not a field of a backoff of type ${b.type} (${known.join(', ')})` };
  if (b.type === 'fixed') return isDelay(b.delayMs) ? undefined : { field: '.delayMs', value: b.delayMs, rule: DELAY_RULE };
  for (const field of ['baseMs', 'maxMs'] as const)
    if (b[field] !== undefined && !isDelay(b[field])) return { field: `.${field}`, value: b[field], rule: DELAY_RULE };
  return undefined;
}

/** Checks a handler's backoff at registration; the error names the handler, the field and the rule. */
export function checkBackoff(handler: string, backoff: unknown): TaskBackoff {
  if (typeof backoff === 'function') return backoff as TaskBackoff;
  const problem = backoffProblem(backoff, false);
  if (problem !== undefined) {
    const rule = problem.field === '' ? `${problem.rule} or a function (attempt, error) => ms` : problem.rule;
    throw new FabricError('SF_BAD_OPTION', `task handler "${handler}": backoff${problem.field} = ${describeValue(problem.value)}: ${rule}`);
  }
  return backoff as TaskBackoff;
}

/**
 * A task's own backoff (enqueue option, or read back from a store): the
 * problem as `backoff.delayMs = …: rule`, or undefined when it is a fixed or
 * exponential backoff with only its own fields. A function is refused: it
 * cannot be stored.
 */
export function storedBackoffProblem(backoff: unknown): string | undefined {
  if (typeof backoff === 'function')
    return "backoff = a function: a task keeps its backoff as data, { type: 'fixed', delayMs } or { type: 'exponential', baseMs?, maxMs? } (register a function with the handler)";
  const problem = backoffProblem(backoff, true);
  return problem === undefined ? undefined : `backoff${problem.field} = ${describeValue(problem.value)}: ${problem.rule}`;
}

/** The stored form of a valid backoff: its own fields only, in a fixed order. */
export function storedBackoff(backoff: StoredBackoff): StoredBackoff {
  if (backoff.type === 'fixed') return { type: 'fixed', delayMs: backoff.delayMs };
  return {
    type: 'exponential',
    ...(backoff.baseMs === undefined ? {} : { baseMs: backoff.baseMs }),
    ...(backoff.maxMs === undefined ? {} : { maxMs: backoff.maxMs }),
  };
}

/** Exponential backoff with full jitter: a random wait up to base * 2^(attempt - 1), capped. */
export function backoffDelayMs(attempt: number, backoff: BackoffOptions = {}, random: () => number = Math.random): number {
  const baseMs = backoff.baseMs ?? BACKOFF_DEFAULTS.baseMs;
  const maxMs = backoff.maxMs ?? BACKOFF_DEFAULTS.maxMs;
  return backoffMs(attempt - 1, { baseMs, maxMs }, random);
}

/**
 * The wait before the next attempt after `attempt` failed, by `backoff`:
 * the task's own (enqueue option `backoff`), else its handler's, as the
 * runner picks it; with none, the runner's exponential one. A function that throws or
 * returns what is not a delay gives the runner's, and `onBadBackoff` says why.
 */
export function retryDelayMs(
  backoff: TaskBackoff | undefined,
  attempt: number,
  error: string,
  fallback: BackoffOptions = {},
  onBadBackoff?: (problem: string) => void,
): number {
  if (backoff === undefined) return backoffDelayMs(attempt, fallback);
  if (typeof backoff === 'function') {
    let ms: unknown;
    try {
      ms = backoff(attempt, error);
    } catch (thrown) {
      onBadBackoff?.(`threw: ${(thrown as Error)?.message ?? String(thrown)}`);
      return backoffDelayMs(attempt, fallback);
    }
    if (isDelay(ms)) return ms;
    onBadBackoff?.(
      `returned ${typeof ms === 'number' ? String(ms) : describeValue(ms)}, not a number of milliseconds from 0 to 2147483647`,
    );
    return backoffDelayMs(attempt, fallback);
  }
  if (backoff.type === 'fixed') return backoff.delayMs;
  return backoffDelayMs(attempt, { baseMs: backoff.baseMs ?? fallback.baseMs, maxMs: backoff.maxMs ?? fallback.maxMs } as BackoffOptions);
}
