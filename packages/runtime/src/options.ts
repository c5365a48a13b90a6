import { describeValue, FabricError } from './errors.js';
import type { CancelMode, SubscribeOptions } from './types.js';

/** Every subscription default in one place. */
export const SUBSCRIPTION_DEFAULTS = {
  maxDemand: 1000,
  cancel: 'permanent' as CancelMode,
} as const;

/** Every producer default in one place. */
export const PRODUCER_DEFAULTS = {
  bufferSize: 10_000,
  bufferKeep: 'last',
  demand: 'forward',
} as const;

export interface ResolvedSubscription {
  readonly maxDemand: number;
  readonly minDemand: number;
  readonly cancel: CancelMode;
  readonly group: string | undefined;
}

function badOption(where: string, option: string, value: unknown, rule: string): FabricError {
  return new FabricError('SF_BAD_OPTION', `${where}: option ${option} = ${describeValue(value)}: ${rule}`);
}

export function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value > 0;
}

/** Applies defaults and checks the demand and cancel options of one subscription. */
export function resolveSubscription(where: string, options: SubscribeOptions): ResolvedSubscription {
  const maxDemand = options.maxDemand ?? SUBSCRIPTION_DEFAULTS.maxDemand;
  if (!isPositiveInteger(maxDemand)) throw badOption(where, 'maxDemand', maxDemand, 'must be a positive integer');
  const minDemand = options.minDemand ?? Math.floor(maxDemand / 2);
  if (typeof minDemand !== 'number' || !Number.isInteger(minDemand) || minDemand < 0 || minDemand >= maxDemand) {
    throw badOption(where, 'minDemand', minDemand, `must be an integer from 0 to maxDemand - 1 (${maxDemand - 1})`);
  }
  const cancel = options.cancel ?? SUBSCRIPTION_DEFAULTS.cancel;
  if (cancel !== 'permanent' && cancel !== 'transient' && cancel !== 'temporary') {
    throw badOption(where, 'cancel', cancel, "must be 'permanent', 'transient' or 'temporary'");
  }
  const group = options.group;
  if (group !== undefined && (typeof group !== 'string' || group === ''))
    throw badOption(where, 'group', group, 'must be a non-empty string');
  return { maxDemand, minDemand, cancel, group };
}

export function checkBufferSize(where: string, value: unknown): number {
  if (value === Number.POSITIVE_INFINITY) return value;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw badOption(where, 'bufferSize', value, 'must be a non-negative integer or Infinity');
  }
  return value;
}

export function checkOneOf<T extends string>(where: string, option: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw badOption(where, option, value, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  }
  return value as T;
}

export { badOption };
