import { type BufferKeep, EventBuffer } from '../buffer.js';
import { describeValue, FabricError } from '../errors.js';
import type { StageRef, SubscribeOptions } from '../types.js';
import { type Dispatcher, type DispatcherHost, NOTHING_LEFT } from './dispatcher.js';

type PartitionName = string | number;

interface Partition<T> {
  readonly name: PartitionName;
  subscriber: number | undefined;
  /** Demand mode (queue undefined): events the subscriber asked for and was not sent. */
  demand: number;
  /**
   * Queue mode: events that reached this partition beyond its subscriber's
   * demand (or before it had a subscriber), with info markers among them.
   */
  queue: EventBuffer<T> | undefined;
  /**
   * Events at the front of the queue that a cancel already asked the
   * producer to replace: a kept queue is handed back once, not at every cancel.
   */
  handedBack: number;
  /** Events for this partition in the dispatch under way. */
  batch: T[] | undefined;
}

/** An info message waiting until every partition queued in front of it has passed it. */
interface InfoWait {
  readonly message: unknown;
  left: number;
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
 *
 * As in GenStage the producer has one demand counter, `waiting`: an ask
 * forwards what was not forwarded yet, and a dispatch places events only up
 * to what is waiting; the rest goes back to the producer's buffer. The
 * producer never learns which partition asked, so a partition may receive
 * more than its subscriber asked for: the excess waits in that partition's
 * queue until the subscriber asks. Unlike GenStage those queues are capped
 * (maxHeldPerPartition, by the producer's bufferKeep, reported), and a
 * cancelled partition keeps its queue for its next subscriber.
 */
export class PartitionDispatcher<T> implements Dispatcher<T> {
  private readonly partitions = new Map<PartitionName, Partition<T>>();
  private readonly bySubscriber = new Map<number, Partition<T>>();
  private readonly hash: (event: T) => PartitionName | undefined;
  /** Demand forwarded to the producer that no dispatched event has met yet. */
  private waitingDemand = 0;
  /** Demand of cancelled subscribers, forwarded and still owed by the producer: later asks are cut by it. */
  private pendingDemand = 0;
  /** Partitions that got events in the dispatch under way (reused, so a dispatch allocates no list). */
  private readonly touched: Partition<T>[] = [];

  constructor(
    names: readonly PartitionName[],
    hash: ((event: T) => PartitionName | undefined) | undefined,
    private readonly maxHeldPerPartition: number,
    private readonly keep: BufferKeep,
    private readonly host: DispatcherHost<T>,
  ) {
    for (const name of names) {
      this.partitions.set(name, { name, subscriber: undefined, demand: 0, queue: undefined, handedBack: 0, batch: undefined });
    }
    this.hash = hash ?? ((event: T) => names[hashEvent(event) % names.length]);
  }

  get waiting(): number {
    return this.waitingDemand;
  }

  get pending(): number {
    return this.pendingDemand;
  }

  subscribe(subscriptionId: number, options: SubscribeOptions, _consumer?: StageRef): number {
    const name = options.partition;
    const partition = name === undefined ? undefined : this.partitions.get(name);
    if (partition === undefined) {
      throw new FabricError(
        'SF_BAD_OPTION',
        name === undefined
          ? 'subscription option partition is required when subscribing to a producer with a partition dispatcher'
          : `subscription option partition = ${describeValue(name)}: must be one of ${[...this.partitions.keys()].map((k) => describeValue(k)).join(', ')}`,
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
    const queue = partition.queue;
    if (queue === undefined) {
      this.pendingDemand += partition.demand;
      partition.demand = 0;
      return 0;
    }
    // Infos wait for no partition without a subscriber.
    for (const item of queue.takeAllMarkers()) this.passInfo(item as InfoWait);
    // The queued events used up demand that other partitions asked for: ask the producer for as many again,
    // as GenStage does. GenStage drops the queue; it stays here, for the partition's next subscriber.
    const length = queue.length;
    const replace = length - partition.handedBack;
    partition.handedBack = length;
    if (length === 0) partition.queue = undefined;
    this.waitingDemand += replace;
    return replace;
  }

  ask(subscriptionId: number, count: number): number {
    const partition = this.bySubscriber.get(subscriptionId);
    if (partition === undefined) return 0;
    if (partition.queue === undefined) partition.demand += count;
    else this.sendFromQueue(partition, partition.queue, count);
    const alreadySent = Math.min(this.pendingDemand, count);
    const demand = count - alreadySent;
    this.pendingDemand -= alreadySent;
    this.waitingDemand += demand;
    return demand;
  }

  dispatch(events: T[]): readonly T[] {
    let counter = this.waitingDemand;
    if (counter === 0) return events;
    const touched = this.touched;
    let i = 0;
    try {
      for (; i < events.length && counter > 0; i++) {
        const event = events[i] as T;
        const name = this.hash(event);
        if (name === undefined) continue; // the hash discarded it; it meets no demand
        const partition = this.partitions.get(name);
        if (partition === undefined) {
          throw new FabricError(
            'SF_BAD_RETURN',
            `partition hash returned ${describeValue(name)} for event ${describeValue(event)}, not one of the partitions ${[...this.partitions.keys()].map((k) => describeValue(k)).join(', ')}`,
          );
        }
        if (partition.batch === undefined) {
          partition.batch = [event];
          touched.push(partition);
        } else {
          partition.batch.push(event);
        }
        counter--;
      }
      this.waitingDemand = counter;
      for (const partition of touched) this.place(partition, partition.batch as T[]);
    } finally {
      for (const partition of touched) partition.batch = undefined;
      touched.length = 0;
    }
    return i === events.length ? NOTHING_LEFT : events.slice(i);
  }

  info(message: unknown): void {
    const wait: InfoWait = { message, left: 0 };
    for (const partition of this.partitions.values()) {
      if (partition.queue === undefined) continue;
      partition.queue.pushMarker(wait, true);
      wait.left++;
    }
    if (wait.left === 0) this.host.info(message);
  }

  demands(): ReadonlyMap<number, number> {
    return new Map([...this.bySubscriber].map(([id, p]) => [id, p.queue === undefined ? p.demand : 0]));
  }

  held(): number {
    let n = 0;
    for (const p of this.partitions.values()) n += p.queue?.length ?? 0;
    return n;
  }

  /** Events a partition got in one dispatch: to its subscriber within its demand, the rest to its queue. */
  private place(partition: Partition<T>, batch: T[]): void {
    const queue = partition.queue;
    if (queue !== undefined) {
      this.enqueue(partition, queue, batch);
      return;
    }
    const demand = partition.demand;
    if (batch.length < demand) {
      partition.demand = demand - batch.length;
      this.host.send(partition.subscriber as number, batch);
      return;
    }
    // Demand met exactly or exceeded: the partition turns to its queue, even empty, as GenStage's does.
    partition.demand = 0;
    const created = new EventBuffer<T>(this.maxHeldPerPartition, this.keep);
    partition.queue = created;
    if (demand > 0) this.host.send(partition.subscriber as number, batch.length === demand ? batch : batch.slice(0, demand));
    if (batch.length > demand) this.enqueue(partition, created, demand === 0 ? batch : batch.slice(demand));
  }

  private enqueue(partition: Partition<T>, queue: EventBuffer<T>, events: T[]): void {
    const dropped = queue.push(events, (item) => this.passInfo(item as InfoWait));
    if (dropped === 0) return;
    // keep 'last' drops from the front, where the events already handed back are.
    if (this.keep === 'last') partition.handedBack = Math.max(0, partition.handedBack - dropped);
    this.host.overflow(partition.name, dropped, this.maxHeldPerPartition);
  }

  /** GenStage's send_from_queue: up to `count` queued events, infos passed as they are reached. */
  private sendFromQueue(partition: Partition<T>, queue: EventBuffer<T>, count: number): void {
    const subscriber = partition.subscriber as number;
    let left = count;
    while (left > 0) {
      const events = queue.take(left);
      if (events.length > 0) {
        left -= events.length;
        partition.handedBack = Math.max(0, partition.handedBack - events.length);
        this.host.send(subscriber, events);
      }
      const infos = queue.takeMarker();
      if (infos !== undefined) {
        for (const item of infos) this.passInfo(item as InfoWait);
      } else if (events.length === 0) {
        break; // the queue is empty
      }
    }
    if (left > 0) {
      // The queue ran dry: back to demand mode with what is left of the ask.
      partition.queue = undefined;
      partition.handedBack = 0;
      partition.demand = left;
    }
  }

  private passInfo(wait: InfoWait): void {
    if (--wait.left === 0) this.host.info(wait.message);
  }
}
