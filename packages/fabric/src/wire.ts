import { describeValue, FabricError } from '@stagefabric/runtime';

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
  /** `seq`: the number of the first event; a batch already seen is dropped. */
  | { readonly t: 'events'; readonly key: string; readonly epoch: number; readonly seq: number; readonly events: readonly unknown[] }
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

export function toWireReason(reason: unknown): WireReason {
  if (typeof reason === 'string') return reason;
  if (reason instanceof Error) {
    const code = (reason as { code?: unknown }).code;
    return typeof code === 'string' ? { error: reason.message, code } : { error: reason.message };
  }
  if (typeof reason === 'object' && reason !== null && 'shutdown' in reason)
    return { shutdown: (reason as { shutdown: unknown }).shutdown };
  return describeValue(reason);
}

export function fromWireReason(reason: WireReason): unknown {
  if (typeof reason === 'object' && 'error' in reason) {
    return new FabricError('SF_STAGE_EXITED', reason.error, reason.code === undefined ? {} : { cause: reason.code });
  }
  return reason;
}

const isString = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 512;
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Checks a decoded entry; the error says which field is wrong, for the dead-letter record. */
export function checkWireMessage(value: unknown, maxEvents: number): WireMessage {
  const fail = (what: string): never => {
    throw new FabricError('SF_BAD_WIRE_MESSAGE', `malformed wire message: ${what}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail(`expected a map, got ${describeValue(value, 80)}`);
  const m = value as Record<string, unknown>;
  if (!isString(m.key)) fail(`key must be a non-empty string, got ${describeValue(m.key, 80)}`);
  if (!isCount(m.epoch)) fail(`epoch must be a non-negative integer, got ${describeValue(m.epoch, 80)}`);
  switch (m.t) {
    case 'subscribe': {
      if (!isString(m.consumer) || !m.consumer.includes('@'))
        fail(`consumer must be an instance address stage@node, got ${describeValue(m.consumer, 80)}`);
      if (!isString(m.incarnation)) fail(`incarnation must be a non-empty string, got ${describeValue(m.incarnation, 80)}`);
      const o = m.options;
      if (typeof o !== 'object' || o === null || Array.isArray(o)) return fail('subscribe options must be a map');
      const opts = o as Record<string, unknown>;
      for (const k of ['maxDemand', 'minDemand'] as const)
        if (opts[k] !== undefined && !isCount(opts[k])) fail(`options.${k} must be a count`);
      return m as unknown as WireMessage;
    }
    case 'ask':
      if (!isCount(m.hwm)) fail(`ask hwm must be a non-negative integer, got ${describeValue(m.hwm, 80)}`);
      return m as unknown as WireMessage;
    case 'events':
      if (!isCount(m.seq)) fail(`events seq must be a non-negative integer, got ${describeValue(m.seq, 80)}`);
      if (!Array.isArray(m.events)) fail(`events must be an array, got ${describeValue(m.events, 80)}`);
      if ((m.events as unknown[]).length > maxEvents)
        fail(`a batch of ${(m.events as unknown[]).length} events exceeds the limit of ${maxEvents}`);
      return m as unknown as WireMessage;
    case 'cancel':
      if (m.from !== 'consumer' && m.from !== 'producer')
        fail(`cancel from must be consumer or producer, got ${describeValue(m.from, 80)}`);
      if (m.kind !== 'cancel' && m.kind !== 'down') fail(`cancel kind must be cancel or down, got ${describeValue(m.kind, 80)}`);
      return m as unknown as WireMessage;
    default:
      return fail(`unknown message type ${describeValue(m.t, 80)}`);
  }
}
