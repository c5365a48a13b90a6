import { describeValue, FabricError, isTraceparent } from '@stagefabric/runtime';
import { isInstance, splitKey } from './names.js';

/**
 * Messages between stage instances on different nodes. Each names its
 * subscription by `key` (stable across restarts: consumer instance >
 * producer instance) and `epoch` (new for every subscribe), so a message
 * from an older subscription is recognised and dropped.
 */
export type WireMessage =
  | {
      readonly t: 'subscribe';
      readonly key: string;
      readonly epoch: number;
      /** The consumer's instance address, `stage@node`: where events go. */
      readonly consumer: string;
      /** The consumer node's incarnation: when that node restarts, only older subscriptions end. */
      readonly incarnation: string;
      readonly options: WireSubscribeOptions;
    }
  /** `hwm`: everything the consumer ever asked for on this epoch, so a repeated ask is harmless. */
  | { readonly t: 'ask'; readonly key: string; readonly epoch: number; readonly hwm: number }
  /**
   * `seq`: the number of the first event; a batch already seen is dropped.
   * `tp`, optional: the W3C traceparent of the span that sent the batch, so
   * the receiving node's span is its child (absent from senders without
   * tracing, and from older ones).
   */
  | {
      readonly t: 'events';
      readonly key: string;
      readonly epoch: number;
      readonly seq: number;
      readonly events: readonly unknown[];
      readonly tp?: string;
    }
  | {
      readonly t: 'cancel';
      readonly key: string;
      readonly epoch: number;
      /** Which side sends it: the consumer cancels upstream, the producer downstream. */
      readonly from: 'consumer' | 'producer';
      readonly kind: 'cancel' | 'down';
      readonly reason: WireReason;
    };

export interface WireSubscribeOptions {
  readonly maxDemand?: number;
  readonly minDemand?: number;
  readonly cancel?: 'permanent' | 'transient' | 'temporary';
  readonly partition?: string | number;
}

/** Exit and cancel reasons cross the wire as plain data. */
export type WireReason = string | { readonly error: string; readonly code?: string } | { readonly shutdown: unknown };

/** Bounds every wire message is held to, whoever wrote it. */
export const WIRE_LIMITS = {
  /** Largest maxDemand a subscription may ask for across hosts (demand is credit: it must stay far below what memory holds). */
  maxDemand: 10_000_000,
  /** Longest key, address, incarnation or partition name. */
  maxStringChars: 512,
  /** Longest reason text a cancel may carry. */
  maxReasonChars: 4096,
} as const;

export function toWireReason(reason: unknown): WireReason {
  if (typeof reason === 'string') return bounded(reason);
  if (reason instanceof Error) {
    const code = (reason as { code?: unknown }).code;
    return typeof code === 'string' ? { error: bounded(reason.message), code: code.slice(0, 128) } : { error: bounded(reason.message) };
  }
  if (typeof reason === 'object' && reason !== null && 'shutdown' in reason) {
    const inner = (reason as { shutdown: unknown }).shutdown;
    return { shutdown: isPlainReason(inner) ? inner : describeValue(inner, WIRE_LIMITS.maxReasonChars) };
  }
  return describeValue(reason, WIRE_LIMITS.maxReasonChars);
}

const bounded = (text: string) => (text.length > WIRE_LIMITS.maxReasonChars ? `${text.slice(0, WIRE_LIMITS.maxReasonChars - 1)}…` : text);

/** What `{ shutdown: x }` may carry on the wire: a short string, a number, a boolean or null. */
function isPlainReason(value: unknown): value is string | number | boolean | null {
  return (
    value === null ||
    typeof value === 'boolean' ||
    (typeof value === 'number' && Number.isFinite(value)) ||
    (typeof value === 'string' && value.length <= WIRE_LIMITS.maxReasonChars)
  );
}

export function fromWireReason(reason: WireReason): unknown {
  if (typeof reason === 'object' && 'error' in reason) {
    return new FabricError('SF_STAGE_EXITED', reason.error, reason.code === undefined ? {} : { cause: reason.code });
  }
  return reason;
}

const isString = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= WIRE_LIMITS.maxStringChars;
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isMap = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Date);

function checkReason(value: unknown): { readonly reason: WireReason } | { readonly problem: string } {
  const problem = (what: string) => ({ problem: `cancel reason must be a string, { error, code? } or { shutdown }: ${what}` });
  if (typeof value === 'string')
    return value.length <= WIRE_LIMITS.maxReasonChars ? { reason: value } : problem(`a string of ${value.length} chars`);
  if (!isMap(value)) return problem(`got ${describeValue(value, 80)}`);
  const keys = Object.keys(value);
  if ('error' in value) {
    if (typeof value.error !== 'string' || value.error.length > WIRE_LIMITS.maxReasonChars) return problem('error must be a short string');
    if (value.code !== undefined && (typeof value.code !== 'string' || value.code.length > 128))
      return problem('code must be a short string');
    if (keys.some((k) => k !== 'error' && k !== 'code')) return problem(`unexpected fields ${describeValue(keys, 80)}`);
    return { reason: typeof value.code === 'string' ? { error: value.error, code: value.code } : { error: value.error } };
  }
  if ('shutdown' in value && keys.length === 1) {
    return isPlainReason(value.shutdown)
      ? { reason: { shutdown: value.shutdown } }
      : problem('shutdown must be a short string, number, boolean or null');
  }
  return problem(`got ${describeValue(value, 80)}`);
}

/**
 * Checks a decoded entry in full and returns a copy holding only the
 * message's own fields, so nothing a foreign writer added reaches a stage.
 * The error says which field is wrong, for the dead-letter record.
 */
export function checkWireMessage(value: unknown, maxEvents: number): WireMessage {
  const fail = (what: string): never => {
    throw new FabricError('SF_BAD_WIRE_MESSAGE', `malformed wire message: ${what}`);
  };
  if (!isMap(value)) return fail(`expected a map, got ${describeValue(value, 80)}`);
  const m = value;
  if (!isString(m.key) || splitKey(m.key) === undefined)
    fail(`key must be a subscription key consumer@node>producer@node, got ${describeValue(m.key, 80)}`);
  if (!isCount(m.epoch)) fail(`epoch must be a non-negative integer, got ${describeValue(m.epoch, 80)}`);
  const key = m.key as string;
  const epoch = m.epoch as number;
  switch (m.t) {
    case 'subscribe': {
      if (!isString(m.consumer) || !isInstance(m.consumer))
        fail(`consumer must be an instance address stage@node, got ${describeValue(m.consumer, 80)}`);
      if (splitKey(key)?.consumer !== m.consumer)
        fail(`key ${describeValue(key, 80)} does not start with its consumer ${describeValue(m.consumer, 80)}`);
      if (!isString(m.incarnation)) fail(`incarnation must be a non-empty string, got ${describeValue(m.incarnation, 80)}`);
      const o = m.options;
      if (!isMap(o)) return fail('subscribe options must be a map');
      const options: { -readonly [K in keyof WireSubscribeOptions]: WireSubscribeOptions[K] } = {};
      for (const k of Object.keys(o))
        if (!['maxDemand', 'minDemand', 'cancel', 'partition'].includes(k)) fail(`unknown subscribe option ${describeValue(k, 40)}`);
      if (o.maxDemand !== undefined) {
        if (!isCount(o.maxDemand) || o.maxDemand < 1 || o.maxDemand > WIRE_LIMITS.maxDemand)
          fail(`options.maxDemand must be an integer from 1 to ${WIRE_LIMITS.maxDemand}, got ${describeValue(o.maxDemand, 40)}`);
        options.maxDemand = o.maxDemand as number;
      }
      if (o.minDemand !== undefined) {
        if (!isCount(o.minDemand) || o.minDemand >= (options.maxDemand ?? WIRE_LIMITS.maxDemand))
          fail(`options.minDemand must be an integer from 0 to maxDemand - 1, got ${describeValue(o.minDemand, 40)}`);
        options.minDemand = o.minDemand as number;
      }
      if (o.cancel !== undefined) {
        if (o.cancel !== 'permanent' && o.cancel !== 'transient' && o.cancel !== 'temporary')
          fail(`options.cancel must be permanent, transient or temporary, got ${describeValue(o.cancel, 40)}`);
        options.cancel = o.cancel as 'permanent' | 'transient' | 'temporary';
      }
      if (o.partition !== undefined) {
        if (!isString(o.partition) && !Number.isSafeInteger(o.partition))
          fail(`options.partition must be a short string or an integer, got ${describeValue(o.partition, 40)}`);
        options.partition = o.partition as string | number;
      }
      return { t: 'subscribe', key, epoch, consumer: m.consumer as string, incarnation: m.incarnation as string, options };
    }
    case 'ask':
      if (!isCount(m.hwm)) fail(`ask hwm must be a non-negative integer, got ${describeValue(m.hwm, 80)}`);
      return { t: 'ask', key, epoch, hwm: m.hwm as number };
    case 'events':
      if (!isCount(m.seq)) fail(`events seq must be a non-negative integer, got ${describeValue(m.seq, 80)}`);
      if (!Array.isArray(m.events)) fail(`events must be an array, got ${describeValue(m.events, 80)}`);
      if ((m.events as unknown[]).length === 0) fail('events must not be empty');
      if ((m.events as unknown[]).length > maxEvents)
        fail(`a batch of ${(m.events as unknown[]).length} events exceeds the limit of ${maxEvents}`);
      if (!Number.isSafeInteger((m.seq as number) + (m.events as unknown[]).length)) fail('events seq overflows');
      if (m.tp !== undefined && !isTraceparent(m.tp))
        fail(`events tp must be a W3C traceparent 00-<32 hex>-<16 hex>-<2 hex>, got ${describeValue(m.tp, 80)}`);
      return {
        t: 'events',
        key,
        epoch,
        seq: m.seq as number,
        events: m.events as unknown[],
        ...(m.tp === undefined ? {} : { tp: m.tp as string }),
      };
    case 'cancel': {
      if (m.from !== 'consumer' && m.from !== 'producer')
        fail(`cancel from must be consumer or producer, got ${describeValue(m.from, 80)}`);
      if (m.kind !== 'cancel' && m.kind !== 'down') fail(`cancel kind must be cancel or down, got ${describeValue(m.kind, 80)}`);
      const checked = checkReason(m.reason);
      if ('problem' in checked) return fail(checked.problem);
      return {
        t: 'cancel',
        key,
        epoch,
        from: m.from as 'consumer' | 'producer',
        kind: m.kind as 'cancel' | 'down',
        reason: checked.reason,
      };
    }
    default:
      return fail(`unknown message type ${describeValue(m.t, 80)}`);
  }
}
