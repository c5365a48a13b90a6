import type { BufferKeep } from './buffer.js';
import type { DispatcherSpec } from './dispatchers/dispatcher.js';

export type StageKind = 'producer' | 'producer_consumer' | 'consumer';

/** Why a stage stopped. 'normal', 'shutdown' and { shutdown } are the clean exits. */
export type ExitReason = 'normal' | 'shutdown' | { readonly shutdown: unknown } | Error | { readonly [key: string]: unknown } | string;

export function isCleanExit(reason: unknown): boolean {
  return (
    reason === 'normal' ||
    reason === 'shutdown' ||
    (typeof reason === 'object' && reason !== null && !(reason instanceof Error) && 'shutdown' in reason)
  );
}

/** A handle on a running stage instance. */
export interface StageRef {
  readonly id: number;
  readonly name: string | undefined;
  /** Name for logs and errors: the registered name, or `kind#id`. */
  readonly label: string;
}

/** What a consumer may hold to reach the producer it subscribes to: a ref or a registered name. */
export type StageAddress = StageRef | string;

/** How a consumer reacts when its producer cancels or exits (GenStage's `cancel` option). */
export type CancelMode = 'permanent' | 'transient' | 'temporary';

export interface SubscribeOptions {
  /** The producer: a ref or a registered name. */
  readonly to: StageAddress;
  /** Most events in flight on this subscription. Default 1000. */
  readonly maxDemand?: number;
  /** The consumer asks again when its outstanding demand falls to this. Default maxDemand / 2 (rounded down). */
  readonly minDemand?: number;
  /** Default 'permanent'. */
  readonly cancel?: CancelMode;
  /** PartitionDispatcher: the partition this subscriber takes. */
  readonly partition?: number | string;
  /** BroadcastDispatcher: only events for which this returns true reach the subscriber. */
  readonly selector?: (event: never) => boolean;
  /**
   * Producers subscribed to with one group are one producer to this
   * consumer's cancel mode: it follows a clean exit (normal, shutdown) only
   * once the last of them has exited, so the events of the others still
   * reach it. An abnormal exit of any is followed at once. The node agent
   * sets it to the stage's name on every subscription to its replicas.
   */
  readonly group?: string;
  /** Free-form options passed to both sides' handleSubscribe. */
  readonly [key: string]: unknown;
}

/** One consumer -> producer link, as callbacks see it on either side. */
export interface Subscription {
  readonly id: number;
  readonly producer: StageRef;
  readonly consumer: StageRef;
}

/** handleCancel receives this: `cancel` when the other side cancelled, `down` when it exited. */
export interface CancelInfo {
  readonly kind: 'cancel' | 'down';
  readonly reason: unknown;
}

/** Identifies the caller of handleCall, for a deferred `ctx.reply(from, value)`. */
export interface CallFrom {
  readonly callId: number;
}

/** Options a producer (or producer_consumer) returns from init. */
export interface ProducerOptions {
  readonly dispatcher?: DispatcherSpec;
  /** Events kept when emitted beyond demand. Default 10 000 (GenStage: Infinity for producer_consumers). */
  readonly bufferSize?: number;
  /** Default 'last'. */
  readonly bufferKeep?: BufferKeep;
  /**
   * 'accumulate' holds demand and emitted events back until switched to
   * 'forward'. Default 'forward'. Producers only, as in GenStage.
   */
  readonly demand?: 'forward' | 'accumulate';
}

export interface ConsumerOptions {
  /** Producers to subscribe to when the stage starts (and again after every restart). */
  readonly subscribeTo?: readonly (StageAddress | SubscribeOptions)[];
}

export type InitResult<S, K extends StageKind> = { readonly state: S } & (K extends 'producer'
  ? ProducerOptions
  : K extends 'consumer'
    ? ConsumerOptions
    : ProducerOptions & ConsumerOptions);

/** What most callbacks return. Omitting `state` keeps the current state; `stop` stops the stage. */
export interface CallbackResult<S, Out> {
  readonly events?: readonly Out[];
  readonly state?: S;
  readonly stop?: ExitReason;
}

export interface CallResult<S, Out, R> extends CallbackResult<S, Out> {
  readonly reply?: R;
}

export type SubscribeResult<S> =
  | { readonly demand?: 'automatic' | 'manual'; readonly state?: S; readonly stop?: ExitReason }
  | undefined
  | void;

export type MaybePromise<T> = T | Promise<T>;
