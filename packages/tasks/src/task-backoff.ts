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

/** Checks a handler's backoff at registration; the error names the handler, the field and the rule. */
export function checkBackoff(handler: string, backoff: unknown): TaskBackoff {
  const fail = (field: string, value: unknown, rule: string): never => {
    throw new FabricError('SF_BAD_OPTION', `task handler "${handler}": backoff${field} = ${describeValue(value)}: ${rule}`);
  };
  if (typeof backoff === 'function') return backoff as TaskBackoff;
  if (typeof backoff !== 'object' || backoff === null)
    return fail(
      '',
      backoff,
      "must be { type: 'fixed', delayMs }, { type: 'exponential', baseMs?, maxMs? } or a function (attempt, error) => ms",
    );
  const b = backoff as Record<string, unknown>;
  if (b.type === 'fixed') {
    if (!isDelay(b.delayMs)) fail('.delayMs', b.delayMs, 'must be a number of milliseconds from 0 to 2147483647');
  } else if (b.type === 'exponential') {
    if (b.baseMs !== undefined && !isDelay(b.baseMs)) fail('.baseMs', b.baseMs, 'must be a number of milliseconds from 0 to 2147483647');
    if (b.maxMs !== undefined && !isDelay(b.maxMs)) fail('.maxMs', b.maxMs, 'must be a number of milliseconds from 0 to 2147483647');
  } else fail('.type', b.type, "must be 'fixed' or 'exponential'");
  return backoff as TaskBackoff;
}

/** Exponential backoff with full jitter: a random wait up to base * 2^(attempt - 1), capped. */
export function backoffDelayMs(attempt: number, backoff: BackoffOptions = {}, random: () => number = Math.random): number {
  const baseMs = backoff.baseMs ?? BACKOFF_DEFAULTS.baseMs;
  const maxMs = backoff.maxMs ?? BACKOFF_DEFAULTS.maxMs;
  return backoffMs(attempt - 1, { baseMs, maxMs }, random);
}

/**
 * The wait before the next attempt after `attempt` failed: the handler's
 * backoff, else the runner's exponential one. A function that throws or
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
