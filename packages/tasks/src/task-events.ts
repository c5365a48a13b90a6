import { FabricError } from '@stagefabric/runtime';
import type { TaskProgress } from './task-store.js';

/**
 * What happened to a task. `retried`: a failed attempt that will run again,
 * an operator's retry, or (reason `lease-lost`) a run whose lease expired
 * put back to waiting by lease recovery; `failed`: failed for good (reason
 * `lease-lost`: its lease expired on its last attempt); `released`: a
 * claimed task handed back unstarted, its attempt not counted (a stopping
 * node's, or one its runner never started).
 */
export type TaskEventType = 'enqueued' | 'started' | 'progress' | 'succeeded' | 'failed' | 'retried' | 'cancelled' | 'released';

/** Why a task was `retried` or `failed` other than by its handler's outcome: `lease-lost`, its run's lease expired (its node stopped or stalled). */
export type TaskEventReason = 'lease-lost';

/** One lifecycle event of a task, as any process following the store sees it. */
export interface TaskEvent {
  readonly type: TaskEventType;
  readonly id: string;
  readonly queue: string;
  readonly name?: string;
  /** The attempt it concerns (1 on the first run). */
  readonly attempt?: number;
  /** With `progress`: what the handler reported. */
  readonly progress?: TaskProgress;
  /** With `failed` and `retried` after a failed attempt: the error, truncated to ERROR_CHARS. */
  readonly error?: string;
  /** With `retried` and `failed` from lease recovery: `lease-lost`. */
  readonly reason?: TaskEventReason;
  /** When the store recorded it (ms since the epoch). */
  readonly at: number;
}

/** Said instead of events a slow consumer's bounded buffer dropped (the oldest ones): how many since the last such marker. */
export interface TaskEventsOverflow {
  readonly type: 'overflow';
  readonly dropped: number;
}

export interface TaskEventsOptions {
  /** Ends the iteration (it returns, without error) when aborted. */
  readonly signal?: AbortSignal;
  /** Events kept for a consumer that falls behind; beyond it the oldest are dropped and an `overflow` marker says how many. Default 10 000. */
  readonly bufferSize?: number;
}

/** Part of the task store contract: lifecycle events, followable from any process. */
export interface TaskEventsStore {
  /**
   * Lifecycle events of every task of the store from now on (NOTIFY on the
   * SQL stores, a Redis channel on BullMQ): at most once each, none replayed
   * from before the call nor kept while its connection was down. The SQL
   * stores build and send events only while someone follows them: from
   * the first `next()`, once the follower is registered.
   */
  events(options?: TaskEventsOptions): AsyncIterable<TaskEvent | TaskEventsOverflow>;
}

export const EVENT_BUFFER_DEFAULT = 10_000;
/** An error in an event is cut to this many characters, so a payload stays well under NOTIFY's 8000 bytes. */
export const ERROR_CHARS = 500;
const PAYLOAD_MAX_BYTES = 7_500;

const TYPES = new Set<string>(['enqueued', 'started', 'progress', 'succeeded', 'failed', 'retried', 'cancelled', 'released']);

/** The event of a task lease recovery found expired: back to waiting (`retried`), or failed for good on its last attempt. */
export function leaseLostEvent(
  final: boolean,
  task: { readonly id: string; readonly queue: string; readonly name?: string; readonly attempt: number; readonly error: string },
): Omit<TaskEvent, 'at'> {
  return {
    type: final ? 'failed' : 'retried',
    id: task.id,
    queue: task.queue,
    ...(task.name === undefined ? {} : { name: task.name }),
    attempt: task.attempt,
    error: task.error,
    reason: 'lease-lost',
  };
}

/** An event as its payload on the wire: small (an error truncated, a progress too large left out). */
export function encodeEvent(event: Omit<TaskEvent, 'at'> & { at?: number }): string {
  const e: TaskEvent = {
    ...event,
    ...(event.error === undefined ? {} : { error: event.error.slice(0, ERROR_CHARS) }),
    at: event.at ?? Date.now(),
  };
  const text = JSON.stringify(e);
  if (Buffer.byteLength(text) <= PAYLOAD_MAX_BYTES) return text;
  const { progress: _p, name: _n, ...small } = e;
  return JSON.stringify(small);
}

/** Events sent together as one payload are cut into payloads of about this many characters. */
const BATCH_PAYLOAD_CHARS = 64 * 1024;

/**
 * Events as few payloads (JSON arrays of encoded events, each about 64 KiB
 * at most), for a channel without NOTIFY's size limit: one message per
 * batch instead of one per event.
 */
export function encodeEventBatches(events: readonly (Omit<TaskEvent, 'at'> & { at?: number })[]): string[] {
  const payloads: string[] = [];
  let part: string[] = [];
  let chars = 0;
  for (const e of events) {
    const text = encodeEvent(e);
    if (part.length > 0 && chars + text.length > BATCH_PAYLOAD_CHARS) {
      payloads.push(`[${part.join(',')}]`);
      part = [];
      chars = 0;
    }
    part.push(text);
    chars += text.length + 1;
  }
  if (part.length > 0) payloads.push(`[${part.join(',')}]`);
  return payloads;
}

function asEvent(e: unknown): TaskEvent | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const { type, id, queue } = e as Partial<TaskEvent>;
  return typeof type === 'string' && TYPES.has(type) && typeof id === 'string' && typeof queue === 'string' ? (e as TaskEvent) : undefined;
}

/** A payload back as an event, or undefined when it is not one (another writer on the channel). */
export function decodeEvent(payload: string): TaskEvent | undefined {
  try {
    return asEvent(JSON.parse(payload));
  } catch {
    return undefined;
  }
}

/** A payload of one event or of a batch (an array) back as its events; what is not an event is left out. */
export function decodeEvents(payload: string): TaskEvent[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) {
    const one = asEvent(parsed);
    return one === undefined ? [] : [one];
  }
  const events: TaskEvent[] = [];
  for (const e of parsed) {
    const event = asEvent(e);
    if (event !== undefined) events.push(event);
  }
  return events;
}

/**
 * Events pushed by a subscription, pulled by one consumer, with a bounded
 * buffer: past `bufferSize` the oldest go, counted, and the consumer gets an
 * `overflow` marker before the events that follow.
 */
export async function* followEvents(
  subscribe: (push: (payload: string) => void) => Promise<() => Promise<void>>,
  options: TaskEventsOptions = {},
): AsyncGenerator<TaskEvent | TaskEventsOverflow> {
  const size = options.bufferSize ?? EVENT_BUFFER_DEFAULT;
  if (!Number.isInteger(size) || size < 1)
    throw new FabricError('SF_BAD_OPTION', `events: option bufferSize must be a positive integer, got ${size}`);
  const signal = options.signal;
  if (signal?.aborted) return;
  const buffer: TaskEvent[] = [];
  let head = 0;
  let dropped = 0;
  let wake: (() => void) | undefined;
  const poke = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unsubscribe = await subscribe((payload) => {
    const events = decodeEvents(payload);
    if (events.length === 0) return;
    for (const event of events) {
      buffer.push(event);
      if (buffer.length - head > size) {
        head++;
        dropped++;
      }
    }
    if (head > 1024 && head * 2 > buffer.length) {
      buffer.splice(0, head);
      head = 0;
    }
    poke();
  });
  signal?.addEventListener('abort', poke, { once: true });
  try {
    while (!signal?.aborted) {
      if (dropped > 0) {
        const n = dropped;
        dropped = 0;
        yield { type: 'overflow', dropped: n };
        continue;
      }
      if (head < buffer.length) {
        const event = buffer[head++] as TaskEvent;
        if (head === buffer.length) {
          buffer.length = 0;
          head = 0;
        }
        yield event;
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    signal?.removeEventListener('abort', poke);
    await unsubscribe();
  }
}
