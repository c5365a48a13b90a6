import { waitFor } from '../../../test/support/wait-for.js';
import {
  type CancelInfo,
  consumer,
  type ProducerOptions,
  producer,
  type StageAddress,
  type SubscribeOptions,
  type Subscription,
} from '../src/index.js';

export { waitFor };

/** A producer of consecutive integers that records every demand it is asked for. */
export function counter(
  options: ProducerOptions & { readonly demands?: number[]; readonly limit?: number; readonly stopAtLimit?: boolean } = {},
) {
  const { demands, limit, stopAtLimit, ...producerOptions } = options;
  return producer<number, number, number>({
    init: (start) => ({ state: start ?? 0, ...producerOptions }),
    handleDemand(demand, next) {
      demands?.push(demand);
      const n = limit === undefined ? demand : Math.max(0, Math.min(demand, limit - next));
      const events = Array.from({ length: n }, (_, i) => next + i);
      return stopAtLimit && limit !== undefined && next + n >= limit
        ? { events, state: next + n, stop: 'normal' }
        : { events, state: next + n };
    },
  });
}

/** A producer that emits only what is pushed to it with cast(['emit', events]). */
export function pushProducer(options: ProducerOptions & { readonly demands?: number[] } = {}) {
  const { demands, ...producerOptions } = options;
  return producer<null, unknown, void>({
    init: () => ({ state: null, ...producerOptions }),
    handleDemand(demand) {
      demands?.push(demand);
    },
    handleCast(message) {
      const [kind, events] = message as [string, unknown[]];
      if (kind === 'emit') return { events };
      return undefined;
    },
  });
}

export interface Recorder<T> {
  readonly batches: T[][];
  readonly cancels: CancelInfo[];
  readonly subscriptions: Subscription[];
  events(): T[];
}

export function recorder<T>(): Recorder<T> {
  const batches: T[][] = [];
  return {
    batches,
    cancels: [],
    subscriptions: [],
    events: () => batches.flat(),
  };
}

/** A consumer that records each batch it gets and each cancel it sees. */
export function recordingConsumer<T>(
  rec: Recorder<T>,
  subscribeTo: readonly (StageAddress | SubscribeOptions)[] = [],
  options: { readonly manual?: boolean } = {},
) {
  return consumer<null, T>({
    init: () => ({ state: null, subscribeTo }),
    handleSubscribe(side, _opts, subscription) {
      if (side === 'producer') rec.subscriptions.push(subscription);
      return options.manual ? { demand: 'manual' } : undefined;
    },
    handleEvents(events) {
      rec.batches.push([...events]);
    },
    handleCancel(info) {
      rec.cancels.push(info);
    },
  });
}

/** Polls `condition` until it holds; fails naming `what` after `timeoutMs`. */
