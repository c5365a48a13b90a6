import { describeValue, FabricError } from '../errors.js';
import type { SubscribeOptions } from '../types.js';
import type { Dispatcher, SendEvents } from './dispatcher.js';

type PartitionName = string | number;

interface Partition<T> {
  readonly name: PartitionName;
  subscriber: number | undefined;
  /** Events asked for by the subscriber and not yet sent. */
  demand: number;
  /** Events for this partition that arrived before its subscriber asked. */
  held: T[];
}

/** FNV-1a over the event's text: stable across processes, so every host partitions alike. */
export function hashEvent(event: unknown): number {
  const text = typeof event === 'string' ? event : typeof event === 'number' ? String(event) : (JSON.stringify(event) ?? String(event));
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * Splits events among named partitions by a hash (GenStage.PartitionDispatcher).
 * Each partition has one subscriber and its own demand; events for a partition
 * without demand wait in that partition's queue, which is bounded.
 */
export class PartitionDispatcher<T> implements Dispatcher<T> {
  private readonly partitions = new Map<PartitionName, Partition<T>>();
  private readonly bySubscriber = new Map<number, Partition<T>>();
  private readonly hash: (event: T) => PartitionName | undefined;
  /** Demand forwarded to the producer and not yet produced. */
  private waiting = 0;
  private dropped = 0;
  private heldCount = 0;

  constructor(
    names: readonly PartitionName[],
    hash: ((event: T) => PartitionName | undefined) | undefined,
    private readonly maxHeldPerPartition: number,
    private readonly send: SendEvents<T>,
  ) {
    for (const name of names) this.partitions.set(name, { name, subscriber: undefined, demand: 0, held: [] });
    this.hash = hash ?? ((event: T) => names[hashEvent(event) % names.length]);
  }

  subscribe(subscriptionId: number, options: SubscribeOptions): number {
    const name = options.partition;
    const partition = name === undefined ? undefined : this.partitions.get(name);
    if (partition === undefined) {
      throw new FabricError(
        'SF_BAD_OPTION',
        `subscription option partition = ${describeValue(name)}: must be one of ${[...this.partitions.keys()].map((k) => describeValue(k)).join(', ')}`,
      );
    }
    if (partition.subscriber !== undefined) {
      throw new FabricError('SF_BAD_OPTION', `partition ${describeValue(name)} already has a subscriber`);
    }
    partition.subscriber = subscriptionId;
    this.bySubscriber.set(subscriptionId, partition);
    return 0;
  }

  cancel(subscriptionId: number): number {
    const partition = this.bySubscriber.get(subscriptionId);
    if (partition === undefined) return 0;
    this.bySubscriber.delete(subscriptionId);
    partition.subscriber = undefined;
    partition.demand = 0;
    return 0;
  }

  ask(subscriptionId: number, count: number): number {
    const partition = this.bySubscriber.get(subscriptionId);
    if (partition === undefined) return 0;
    partition.demand += count;
    this.sendHeld(partition);
    return this.refill();
  }

  dispatch(events: T[]): T[] {
    this.waiting = Math.max(0, this.waiting - events.length);
    const batches = new Map<Partition<T>, T[]>();
    for (const event of events) {
      const name = this.hash(event);
      if (name === undefined) continue; // the hash discarded it
      const partition = this.partitions.get(name);
      if (partition === undefined) {
        throw new FabricError('SF_BAD_RETURN', `partition hash returned ${describeValue(name)}, not one of the partitions`);
      }
      if (partition.subscriber !== undefined && partition.demand > 0 && partition.held.length === 0) {
        partition.demand--;
        const batch = batches.get(partition);
        if (batch === undefined) batches.set(partition, [event]);
        else batch.push(event);
      } else {
        this.hold(partition, event);
      }
    }
    for (const [partition, batch] of batches) this.send(partition.subscriber as number, batch);
    return [];
  }

  /** Demand no produced or held event will meet; the producer is asked for it. */
  refill(): number {
    let unmet = 0;
    for (const p of this.bySubscriber.values()) unmet += p.demand;
    const more = unmet - this.waiting;
    if (more <= 0) return 0;
    this.waiting += more;
    return more;
  }

  available(): number {
    return Number.MAX_SAFE_INTEGER;
  }

  demands(): ReadonlyMap<number, number> {
    return new Map([...this.bySubscriber].map(([id, p]) => [id, p.demand]));
  }

  held(): number {
    return this.heldCount;
  }

  takeDropped(): number {
    const n = this.dropped;
    this.dropped = 0;
    return n;
  }

  private hold(partition: Partition<T>, event: T): void {
    partition.held.push(event);
    this.heldCount++;
    if (partition.held.length > this.maxHeldPerPartition) {
      partition.held.shift();
      this.heldCount--;
      this.dropped++;
    }
  }

  private sendHeld(partition: Partition<T>): void {
    const n = Math.min(partition.demand, partition.held.length);
    if (n === 0 || partition.subscriber === undefined) return;
    const batch = partition.held.splice(0, n);
    this.heldCount -= n;
    partition.demand -= n;
    this.send(partition.subscriber, batch);
  }
}
