import type { SubscribeOptions } from '../types.js';

/** Sends a batch of events to one subscription. */
export type SendEvents<T> = (subscriptionId: number, events: T[]) => void;

/**
 * How a producer splits its events among subscriptions. Pure bookkeeping:
 * the stage owns the buffer and the sockets; a dispatcher only decides who
 * gets what and how much demand reaches the producer.
 */
export interface Dispatcher<T> {
  /** A subscription joined. Returns demand to forward to the producer (usually 0). */
  subscribe(subscriptionId: number, options: SubscribeOptions): number;
  /** A subscription left. Returns demand to forward to the producer. */
  cancel(subscriptionId: number): number;
  /** A subscriber asked for `count` more events. Returns demand to forward to the producer. */
  ask(subscriptionId: number, count: number): number;
  /**
   * Hands events to subscribers within their demand. Returns the events no
   * subscriber can take now; the producer keeps them in its buffer.
   */
  dispatch(events: T[]): T[];
  /** Events just made that no subscriber could take went to the producer's buffer. */
  buffered?(count: number): void;
  /** Demand no produced or held event will meet, to forward to the producer after a dispatch. */
  refill(): number;
  /** How many events dispatch would place right now. */
  available(): number;
  /** Outstanding demand per subscription, for metrics and tests. */
  demands(): ReadonlyMap<number, number>;
  /** Events the dispatcher itself holds (partition queues); 0 for most. */
  held(): number;
  /** Events the dispatcher discarded since last asked (bounded partition queues). */
  takeDropped(): number;
}

export type DispatcherSpec =
  | { readonly type: 'demand' }
  | { readonly type: 'broadcast' }
  | {
      readonly type: 'partition';
      /** A count (partitions 0..n-1) or the partition names. */
      readonly partitions: number | readonly (string | number)[];
      /** Maps an event to its partition, or to undefined to discard it. Default: a hash of the event. */
      readonly hash?: (event: never) => string | number | undefined;
      /** Most events held per partition while its subscriber has no demand. Default 10 000. */
      readonly maxHeldPerPartition?: number;
    };
