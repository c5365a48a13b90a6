import type { SubscribeOptions } from '../types.js';
import type { Dispatcher, SendEvents } from './dispatcher.js';

interface Entry {
  readonly id: number;
  demand: number;
}

/**
 * Sends each batch to the subscription with the most outstanding demand
 * (GenStage.DemandDispatcher). Subscribers are kept sorted by demand,
 * largest first; ties keep their order.
 */
export class DemandDispatcher<T> implements Dispatcher<T> {
  private entries: Entry[] = [];

  constructor(private readonly send: SendEvents<T>) {}

  private total = 0;
  /** Demand of cancelled subscriptions already forwarded to the producer, whose events are yet to be made. */
  private pending = 0;

  subscribe(subscriptionId: number, _options: SubscribeOptions): number {
    this.entries.push({ id: subscriptionId, demand: 0 });
    return 0;
  }

  cancel(subscriptionId: number): number {
    const i = this.entries.findIndex((e) => e.id === subscriptionId);
    if (i < 0) return 0;
    const [entry] = this.entries.splice(i, 1);
    if (entry !== undefined) {
      this.pending += entry.demand;
      this.total -= entry.demand;
    }
    return 0;
  }

  ask(subscriptionId: number, count: number): number {
    const i = this.entries.findIndex((e) => e.id === subscriptionId);
    if (i < 0) return 0;
    (this.entries[i] as Entry).demand += count;
    this.total += count;
    this.moveForward(i);
    const alreadySent = Math.min(this.pending, count);
    this.pending -= alreadySent;
    return count - alreadySent;
  }

  dispatch(events: T[]): T[] {
    let offset = 0;
    while (offset < events.length) {
      const first = this.entries[0];
      if (first === undefined || first.demand === 0) break;
      const n = Math.min(first.demand, events.length - offset);
      const batch = offset === 0 && n === events.length ? events : events.slice(offset, offset + n);
      offset += n;
      first.demand -= n;
      this.total -= n;
      this.moveBack(0);
      this.send(first.id, batch);
    }
    return offset === 0 ? events : events.slice(offset);
  }

  /**
   * Events no subscriber could take went to the producer's buffer, where the
   * next asks meet them: they are what the demand of cancelled subscriptions
   * was forwarded for, so that much is no longer to come. (Counted as still to
   * come, the next subscriber's demand would be shorted by it and stall.)
   */
  buffered(count: number): void {
    this.pending = Math.max(0, this.pending - count);
  }

  refill(): number {
    return 0;
  }

  available(): number {
    return this.total;
  }

  demands(): ReadonlyMap<number, number> {
    return new Map(this.entries.map((e) => [e.id, e.demand]));
  }

  held(): number {
    return 0;
  }

  takeDropped(): number {
    return 0;
  }

  /** An entry whose demand grew moves ahead of every entry with less. */
  private moveForward(i: number): void {
    const entries = this.entries;
    const entry = entries[i] as Entry;
    while (i > 0 && (entries[i - 1] as Entry).demand < entry.demand) {
      entries[i] = entries[i - 1] as Entry;
      i--;
    }
    entries[i] = entry;
  }

  /** An entry whose demand shrank moves behind every entry with equal or more. */
  private moveBack(i: number): void {
    const entries = this.entries;
    const entry = entries[i] as Entry;
    while (i < entries.length - 1 && (entries[i + 1] as Entry).demand >= entry.demand) {
      entries[i] = entries[i + 1] as Entry;
      i++;
    }
    entries[i] = entry;
  }
}
