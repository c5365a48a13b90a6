import type { StageRef, SubscribeOptions } from '../types.js';

/** What a dispatcher may do to the producer that owns it. */
export interface DispatcherHost<T> {
  /** Sends a batch of events to one subscription. */
  send(subscriptionId: number, events: T[]): void;
  /**
   * Gives a subscription back demand that events it was not sent used up
   * (a broadcast selector filtered them out). Handled after the messages
   * already queued, as the ask GenStage's dispatcher sends to itself.
   */
  reask(subscriptionId: number, count: number): void;
  /** Hands an info message (GenStage.sync_info/async_info) to the producer's handleInfo. */
  info(message: unknown): void;
  /** The dispatcher's own queue for `partition` was full and discarded `dropped` events. */
  overflow(partition: string | number, dropped: number, capacity: number): void;
}

/**
 * How a producer splits its events among subscriptions: GenStage's
 * Dispatcher behaviour. Pure bookkeeping: the stage owns the buffer and the
 * sockets; a dispatcher decides who gets what and how much demand reaches
 * the producer.
 *
 * The producer's side (GenStage's take_from_buffer and dispatch_events):
 * whatever `subscribe`, `ask` or `cancel` returns is demand forwarded to the
 * producer; it is met first from the producer's buffer, the rest by
 * handleDemand. Whatever `dispatch` returns goes to the buffer, which keeps
 * it by bufferSize and bufferKeep and reports what it drops.
 */
export interface Dispatcher<T> {
  /**
   * A subscription of `consumer` joined. Returns demand to forward to the
   * producer (0 for ours). Throws a FabricError to refuse it.
   */
  subscribe(subscriptionId: number, options: SubscribeOptions, consumer: StageRef): number;
  /** A subscription left. Returns demand to forward to the producer. */
  cancel(subscriptionId: number): number;
  /** A subscriber asked for `count` more events. Returns demand to forward to the producer. */
  ask(subscriptionId: number, count: number): number;
  /**
   * Hands events to subscribers within the demand forwarded so far. Returns
   * the events beyond it; the producer keeps them in its buffer.
   */
  dispatch(events: T[]): readonly T[];
  /** Delivers `message` to the producer once the events already dispatched are on their way (through `host.info`). */
  info(message: unknown): void;
  /** Outstanding demand per subscription, for metrics and tests. */
  demands(): ReadonlyMap<number, number>;
  /** Events waiting in the dispatcher's own queues (partition queues); 0 for the others. */
  held(): number;
}

/** What dispatch returns when every event was placed: one shared array, so a dispatch allocates none. */
export const NOTHING_LEFT: readonly never[] = Object.freeze([]);

export type DispatcherSpec =
  | { readonly type: 'demand' }
  | { readonly type: 'broadcast' }
  | {
      readonly type: 'partition';
      /** A count (partitions 0..n-1) or the partition names. */
      readonly partitions: number | readonly (string | number)[];
      /** Maps an event to its partition, or to undefined to discard it. Default: a hash of the event. */
      readonly hash?: (event: never) => string | number | undefined;
      /**
       * Most events queued per partition beyond its subscriber's demand; the
       * producer's bufferKeep decides which go. GenStage has no such cap (see
       * README, departures). Default: the producer's bufferSize, or 10 000
       * when that is Infinity; Infinity lifts the cap.
       */
      readonly maxHeldPerPartition?: number;
    };
