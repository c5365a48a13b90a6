import { describeValue, FabricError } from '../errors.js';
import type { StageRef, SubscribeOptions } from '../types.js';
import { type Dispatcher, type DispatcherHost, NOTHING_LEFT } from './dispatcher.js';

interface Entry {
  readonly id: number;
  readonly consumer: StageRef | undefined;
  /** This subscriber's demand beyond the shared `waiting`. */
  counter: number;
  readonly selector: ((event: unknown) => boolean) | undefined;
}

/**
 * Sends every event to every subscription, at the pace of the slowest
 * (GenStage.BroadcastDispatcher). Demand common to all subscribers moves
 * into `waiting`, and only what the producer was not asked for yet is
 * forwarded. A selector filters what one subscriber receives; the events it
 * filters out are given back to that subscriber as demand, so it keeps
 * asking the pace it is able to take.
 */
export class BroadcastDispatcher<T> implements Dispatcher<T> {
  private readonly entries: Entry[] = [];
  /** Demand every subscriber has, that the next dispatch may meet. */
  private waitingDemand = 0;
  /** Demand forwarded to the producer and not yet dispatched. */
  private requestedDemand = 0;

  constructor(private readonly host: DispatcherHost<T>) {}

  get waiting(): number {
    return this.waitingDemand;
  }

  get requested(): number {
    return this.requestedDemand;
  }

  subscribe(subscriptionId: number, options: SubscribeOptions, consumer?: StageRef): number {
    const selector = options.selector as ((event: unknown) => boolean) | undefined;
    if (selector !== undefined && typeof selector !== 'function') {
      throw new FabricError('SF_BAD_OPTION', `selector must be a function, got ${typeof selector}`);
    }
    // A second subscription would send every event twice to the same stage: refused, as GenStage does.
    if (consumer !== undefined && this.entries.some((e) => e.consumer === consumer)) {
      throw new FabricError('SF_ALREADY_SUBSCRIBED', `${describeValue(consumer.label)} is already subscribed to this broadcast producer`);
    }
    // The newcomer has no demand yet, so nothing is common any more: the others take back what `waiting` held.
    if (this.waitingDemand > 0) {
      for (const entry of this.entries) entry.counter += this.waitingDemand;
      this.waitingDemand = 0;
    }
    this.entries.push({ id: subscriptionId, consumer, counter: 0, selector });
    return 0;
  }

  cancel(subscriptionId: number): number {
    const i = this.entries.findIndex((e) => e.id === subscriptionId);
    if (i < 0) return 0;
    this.entries.splice(i, 1);
    if (this.entries.length === 0) {
      this.waitingDemand = 0;
      return 0;
    }
    return this.syncDemands();
  }

  ask(subscriptionId: number, count: number): number {
    const entry = this.entries.find((e) => e.id === subscriptionId);
    if (entry === undefined) return 0;
    entry.counter += count;
    return this.syncDemands();
  }

  dispatch(events: T[]): readonly T[] {
    const waiting = this.waitingDemand;
    if (waiting === 0) return this.toBuffer(events);
    const n = Math.min(events.length, waiting);
    const now = n === events.length ? events : events.slice(0, n);
    for (const entry of this.entries) {
      if (entry.selector === undefined) {
        this.host.send(entry.id, now);
        continue;
      }
      const selected = now.filter(entry.selector);
      // What the selector filtered out did not reach this subscriber: its demand for them is still open.
      if (selected.length < n) this.host.reask(entry.id, n - selected.length);
      if (selected.length > 0) this.host.send(entry.id, selected);
    }
    this.waitingDemand = waiting - n;
    this.requestedDemand -= n;
    return n === events.length ? NOTHING_LEFT : this.toBuffer(events.slice(n));
  }

  /**
   * Events going to the producer's buffer meet demand the producer was
   * asked for, so `requested` shrinks by them (as the demand dispatcher's
   * pending does). GenStage leaves `requested` as it is: once a subscriber
   * left before the producer answered, the next subscriber's asks are then
   * cut by demand already met, and the buffered events are never served.
   */
  private toBuffer(rest: T[]): T[] {
    this.requestedDemand = Math.max(this.waitingDemand, this.requestedDemand - rest.length);
    return rest;
  }

  info(message: unknown): void {
    this.host.info(message);
  }

  demands(): ReadonlyMap<number, number> {
    return new Map(this.entries.map((e) => [e.id, e.counter + this.waitingDemand]));
  }

  held(): number {
    return 0;
  }

  /** Moves the demand all subscribers now share into `waiting`; returns what the producer was not asked for yet. */
  private syncDemands(): number {
    let min = this.entries.length === 0 ? 0 : Number.POSITIVE_INFINITY;
    for (const e of this.entries) if (e.counter < min) min = e.counter;
    if (min > 0) {
      for (const e of this.entries) e.counter -= min;
      this.waitingDemand += min;
    }
    const request = Math.max(0, this.waitingDemand - this.requestedDemand);
    this.requestedDemand += request;
    return request;
  }
}
