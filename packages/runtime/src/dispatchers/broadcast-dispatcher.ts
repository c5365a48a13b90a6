import { FabricError } from '../errors.js';
import type { SubscribeOptions } from '../types.js';
import type { Dispatcher, SendEvents } from './dispatcher.js';

interface Entry {
  demand: number;
  readonly selector: ((event: unknown) => boolean) | undefined;
}

/**
 * Sends every event to every subscription, at the pace of the slowest
 * (GenStage.BroadcastDispatcher). A selector filters what one subscriber
 * receives; filtered events still count against its demand, so all
 * subscribers advance together.
 */
export class BroadcastDispatcher<T> implements Dispatcher<T> {
  private readonly entries = new Map<number, Entry>();
  /** Demand forwarded to the producer and not yet dispatched. */
  private waiting = 0;

  constructor(private readonly send: SendEvents<T>) {}

  subscribe(subscriptionId: number, options: SubscribeOptions): number {
    const selector = options.selector as ((event: unknown) => boolean) | undefined;
    if (selector !== undefined && typeof selector !== 'function') {
      throw new FabricError('SF_BAD_OPTION', `selector must be a function, got ${typeof selector}`);
    }
    this.entries.set(subscriptionId, { demand: 0, selector });
    return 0;
  }

  cancel(subscriptionId: number): number {
    this.entries.delete(subscriptionId);
    return this.forwardable();
  }

  ask(subscriptionId: number, count: number): number {
    const entry = this.entries.get(subscriptionId);
    if (entry === undefined) return 0;
    entry.demand += count;
    return this.forwardable();
  }

  dispatch(events: T[]): T[] {
    const send = this.send;
    const n = Math.min(events.length, this.available());
    if (n === 0) return events;
    const now = n === events.length ? events : events.slice(0, n);
    for (const [id, entry] of this.entries) {
      entry.demand -= n;
      const selected = entry.selector === undefined ? now : now.filter(entry.selector);
      if (selected.length > 0) send(id, selected);
    }
    this.waiting = Math.max(0, this.waiting - n);
    return n === events.length ? [] : events.slice(n);
  }

  refill(): number {
    return 0;
  }

  available(): number {
    if (this.entries.size === 0) return 0;
    let min = Number.POSITIVE_INFINITY;
    for (const e of this.entries.values()) if (e.demand < min) min = e.demand;
    return min;
  }

  demands(): ReadonlyMap<number, number> {
    return new Map([...this.entries].map(([id, e]) => [id, e.demand]));
  }

  held(): number {
    return 0;
  }

  takeDropped(): number {
    return 0;
  }

  /** The slowest subscriber's demand not yet forwarded. */
  private forwardable(): number {
    const min = this.available();
    if (min <= this.waiting) return 0;
    const more = min - this.waiting;
    this.waiting = min;
    return more;
  }
}
