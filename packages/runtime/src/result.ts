import { describeValue, FabricError } from './errors.js';
import type { ExitReason } from './types.js';

/** A callback's return value, checked and normalised. */
export interface ReadResult {
  readonly events: unknown[] | undefined;
  readonly hasState: boolean;
  readonly state: unknown;
  readonly stop: ExitReason | undefined;
  readonly hasReply: boolean;
  readonly reply: unknown;
  readonly demand: unknown;
}

const EMPTY: ReadResult = {
  events: undefined,
  hasState: false,
  state: undefined,
  stop: undefined,
  hasReply: false,
  reply: undefined,
  demand: undefined,
};

export interface ResultRules {
  /** Keys this callback may return. */
  readonly keys: readonly string[];
  /** Whether the stage may emit events (producers and producer_consumers). */
  readonly emits: boolean;
}

/**
 * Checks what a callback returned. Instead of GenStage's "bad return value",
 * the error names the stage, the callback, what came back and what was expected.
 */
export function readResult(stage: string, callback: string, value: unknown, rules: ResultRules): ReadResult {
  if (value === undefined) return EMPTY;
  const expected = () => `expected an object with ${rules.keys.map((k) => `\`${k}\``).join(', ')} (all optional) or nothing`;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FabricError('SF_BAD_RETURN', `stage ${stage}: ${callback} returned ${describeValue(value)}; ${expected()}`, { stage });
  }
  const record = value as Record<string, unknown>;
  // for-in rather than Object.keys: this runs once per batch and must not allocate.
  for (const key in record) {
    if (!rules.keys.includes(key)) {
      throw new FabricError('SF_BAD_RETURN', `stage ${stage}: ${callback} returned an unknown key \`${key}\`; ${expected()}`, { stage });
    }
  }
  const events = record.events;
  if (events !== undefined) {
    if (!Array.isArray(events)) {
      throw new FabricError(
        'SF_BAD_RETURN',
        `stage ${stage}: ${callback} returned events that are not an array: ${describeValue(events)}`,
        { stage },
      );
    }
    if (!rules.emits && events.length > 0) {
      throw new FabricError(
        'SF_BAD_RETURN',
        `stage ${stage}: ${callback} returned ${events.length} events, but a consumer cannot emit events (return { state } or nothing)`,
        { stage },
      );
    }
  }
  return {
    events: events as unknown[] | undefined,
    hasState: 'state' in record,
    state: record.state,
    stop: record.stop as ExitReason | undefined,
    hasReply: 'reply' in record,
    reply: record.reply,
    demand: record.demand,
  };
}

export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
