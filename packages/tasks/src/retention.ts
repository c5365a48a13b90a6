import { type Clock, describeValue, FabricError, systemClock } from '@stagefabric/runtime';
import { startPeriodicPasses } from './periodic-passes.js';
import type { TaskState } from './task-store.js';

/**
 * Retention: finished tasks (success, error, timeout, cancelled) are
 * deleted, with their attempt history, once older than a rule's age or
 * beyond its count, newest kept. Deletes go in small batches that touch
 * only finished rows, so claims (which take waiting rows) never wait on them.
 */
export type FinishedState = 'success' | 'error' | 'timeout' | 'cancelled';

export const FINISHED_STATES: readonly FinishedState[] = ['success', 'error', 'timeout', 'cancelled'];

export interface RetentionRule {
  /** Finished longer ago than this: deleted. */
  readonly maxAgeMs?: number;
  /** Beyond the newest this many of the state: deleted. */
  readonly maxCount?: number;
}

/** A rule per finished state; `false` keeps that state's tasks for ever. Absent states take the default's rule. */
export type RetentionPolicy = { readonly [S in FinishedState]?: RetentionRule | false };

export interface PruneCount {
  /** The states the deleted tasks were in (BullMQ: error, timeout and cancelled share one failed set). */
  readonly states: readonly TaskState[];
  readonly count: number;
}

/** What every task store does for retention (part of the TaskStore contract). */
export interface RetentionStore {
  /**
   * Deletes at most `batchSize` tasks of each rule's state that the rule
   * no longer keeps, oldest first, with their attempts; returns how many,
   * by state (only states that lost some).
   */
  pruneFinished(policy: Required<RetentionPolicy>, batchSize: number): Promise<PruneCount[]>;
}

const DAY_MS = 24 * 60 * 60 * 1000;

export const RETENTION_DEFAULTS = {
  /** On by default: successes for a day, failures and cancellations for a week. */
  policy: {
    success: { maxAgeMs: DAY_MS },
    error: { maxAgeMs: 7 * DAY_MS },
    timeout: { maxAgeMs: 7 * DAY_MS },
    cancelled: { maxAgeMs: 7 * DAY_MS },
  },
  /** Tasks deleted per statement. */
  batchSize: 1000,
  /** Time between passes. */
  intervalMs: 60_000,
  /** Batches per state in one pass at most: a large backlog is worked off over several passes. */
  maxBatchesPerPass: 100,
} as const satisfies { policy: Required<RetentionPolicy> } & Record<string, unknown>;

const bad = (what: string, value: unknown, rule: string): never => {
  throw new FabricError('SF_BAD_OPTION', `retention ${what} = ${describeValue(value)}: ${rule}`);
};

/** The policy with defaults for absent states; the error names the state, the field and the rule. */
export function resolveRetention(policy: RetentionPolicy = {}): Required<RetentionPolicy> {
  if (typeof policy !== 'object' || policy === null) bad('policy', policy, 'must be a map of state to { maxAgeMs?, maxCount? } or false');
  for (const key of Object.keys(policy))
    if (!(FINISHED_STATES as readonly string[]).includes(key))
      bad(key, (policy as Record<string, unknown>)[key], `is not a finished state (${FINISHED_STATES.join(', ')})`);
  const out: Record<string, RetentionRule | false> = {};
  for (const state of FINISHED_STATES) {
    const rule: RetentionRule | false = policy[state] ?? RETENTION_DEFAULTS.policy[state];
    if (rule === false) {
      out[state] = false;
      continue;
    }
    if (typeof rule !== 'object' || rule === null) bad(state, rule, 'must be { maxAgeMs?, maxCount? } or false');
    const { maxAgeMs, maxCount, ...rest } = rule;
    for (const key of Object.keys(rest))
      bad(`${state}.${key}`, (rest as Record<string, unknown>)[key], 'is not a rule field (maxAgeMs, maxCount)');
    if (maxAgeMs !== undefined && (!Number.isInteger(maxAgeMs) || maxAgeMs < 0))
      bad(`${state}.maxAgeMs`, maxAgeMs, 'must be a non-negative integer of milliseconds');
    if (maxCount !== undefined && (!Number.isInteger(maxCount) || maxCount < 0))
      bad(`${state}.maxCount`, maxCount, 'must be a non-negative integer');
    if (maxAgeMs === undefined && maxCount === undefined) bad(state, rule, 'give maxAgeMs, maxCount or both (or false to keep every task)');
    out[state] = { ...(maxAgeMs === undefined ? {} : { maxAgeMs }), ...(maxCount === undefined ? {} : { maxCount }) };
  }
  return out as Required<RetentionPolicy>;
}

export interface TaskRetentionOptions {
  readonly store: RetentionStore;
  readonly policy?: RetentionPolicy;
  /** Default 1000. */
  readonly batchSize?: number;
  /** Default 60 000 ms. */
  readonly intervalMs?: number;
  readonly clock?: Clock;
  /** Every batch that deleted tasks: log it, count it. */
  readonly onPruned?: (pruned: PruneCount) => void;
  /** A pass that failed; the next pass tries again. */
  readonly onError?: (error: Error) => void;
}

export interface TaskRetention {
  /** One pass now: batches until nothing is left to delete (or maxBatchesPerPass). Passes never overlap. */
  prune(): Promise<number>;
  /** Idempotent. */
  stop(): Promise<void>;
}

/** Prunes finished tasks by the policy now and every `intervalMs` (each agent runs one; their batches never overlap). */
export function startTaskRetention(options: TaskRetentionOptions): TaskRetention {
  const policy = resolveRetention(options.policy);
  const batchSize = options.batchSize ?? RETENTION_DEFAULTS.batchSize;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 100_000)
    bad('batchSize', batchSize, 'must be an integer from 1 to 100000');
  const intervalMs = options.intervalMs ?? RETENTION_DEFAULTS.intervalMs;
  if (!Number.isInteger(intervalMs) || intervalMs < 10) bad('intervalMs', intervalMs, 'must be an integer of milliseconds >= 10');
  const clock = options.clock ?? systemClock;
  const pass = async (): Promise<number> => {
    let total = 0;
    try {
      for (let batch = 0; batch < RETENTION_DEFAULTS.maxBatchesPerPass && !passes.stopped; batch++) {
        const pruned = await options.store.pruneFinished(policy, batchSize);
        for (const p of pruned) {
          total += p.count;
          options.onPruned?.(p);
        }
        // A batch short of full in every state: nothing more to delete now.
        if (pruned.every((p) => p.count < batchSize)) break;
      }
    } catch (error) {
      options.onError?.(error as Error);
    }
    return total;
  };

  const passes = startPeriodicPasses(pass, intervalMs, clock);
  return { prune: passes.run, stop: passes.stop };
}
