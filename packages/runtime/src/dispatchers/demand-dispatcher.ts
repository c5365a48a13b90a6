import type { StageRef, SubscribeOptions } from '../types.js';
import { type Dispatcher, type DispatcherHost, NOTHING_LEFT } from './dispatcher.js';

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
  /**
   * Demand that cancelled subscriptions had forwarded to the producer and
   * that no event has met yet. The producer still owes those events, so the
   * next asks are cut by it; and each event that goes to the buffer (nobody
   * wants it) meets one of it, as GenStage's max(pending - to_buffer, 0).
   */
  private pendingDemand = 0;

  constructor(private readonly host: DispatcherHost<T>) {}

  get pending(): number {
    return this.pendingDemand;
  }

  subscribe(subscriptionId: number, _options: SubscribeOptions, _consumer?: StageRef): number {
    this.entries.push({ id: subscriptionId, demand: 0 });
    return 0;
  }

  cancel(subscriptionId: number): number {
    const i = this.entries.findIndex((e) => e.id === subscriptionId);
    if (i < 0) return 0;
    const [entry] = this.entries.splice(i, 1);
    if (entry !== undefined) this.pendingDemand += entry.demand;
    return 0;
  }

  ask(subscriptionId: number, count: number): number {
    const i = this.entries.findIndex((e) => e.id === subscriptionId);
    if (i < 0) return 0;
    (this.entries[i] as Entry).demand += count;
    this.moveForward(i);
    const alreadySent = Math.min(this.pendingDemand, count);
    this.pendingDemand -= alreadySent;
    return count - alreadySent;
  }

  dispatch(events: T[]): readonly T[] {
    let offset = 0;
    while (offset < events.length) {
      const first = this.entries[0];
      if (first === undefined || first.demand === 0) break;
      const n = Math.min(first.demand, events.length - offset);
      const batch = offset === 0 && n === events.length ? events : events.slice(offset, offset + n);
      offset += n;
      first.demand -= n;
      this.moveBack(0);
      this.host.send(first.id, batch);
    }
    if (offset === events.length) return NOTHING_LEFT;
    const toBuffer = events.length - offset;
    this.pendingDemand = Math.max(this.pendingDemand - toBuffer, 0);
    return offset === 0 ? events : events.slice(offset);
  }

  info(message: unknown): void {
    this.host.info(message);
  }

  demands(): ReadonlyMap<number, number> {
    return new Map(this.entries.map((e) => [e.id, e.demand]));
  }

  held(): number {
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
