import {
  type CancelInfo,
  type StageMessage,
  type StagePeer,
  SUBSCRIPTION_DEFAULTS,
  type Subscription,
  startSpan,
} from '@stagefabric/runtime';
import type { Transport } from './transport.js';
import { fromWireReason, toWireReason, type WireMessage, type WireSubscribeOptions } from './wire.js';

/** Events of one inbox entry, and how far the local consumer got with them. */
export interface HeldEntry {
  readonly inbox: string;
  readonly entryId: string;
  readonly events: readonly unknown[];
  /** Handed to the consumer stage. */
  delivered: number;
  /** Reported handled by it; the entry is acknowledged when all are. */
  handled: number;
  /** The entry's size on the wire, for the bound on what is held. */
  readonly bytes: number;
}

interface RemoteSubscription {
  readonly id: number;
  readonly consumer: StagePeer;
  readonly key: string;
  readonly epoch: number;
  readonly consumerInbox: string;
  /** Events the consumer asked for and has not been handed. */
  owed: number;
  /** Everything asked on the wire this epoch. */
  hwm: number;
  /** Events received on the wire this epoch. */
  received: number;
  /** The most this subscription may have asked for and not received: the producer refuses asks beyond it. */
  readonly maxDemand: number;
  readonly entries: HeldEntry[];
  /**
   * The producer cancelled (or exited) while events it sent before were
   * still held here: they go to the consumer as it asks, and the cancel
   * after them, as in one process where the cancel queues behind the events.
   */
  cancelled: CancelInfo | undefined;
}

/**
 * What one subscription asked for and received so far, as one side saw it:
 * the consumer's node counts a remote subscription's asks and the events that
 * came over the wire; a producer counts each subscriber's asks and the events
 * it sent it.
 */
export interface DemandRecord {
  readonly side: 'consumer' | 'producer';
  readonly key: string;
  readonly epoch: number;
  readonly asked: number;
  readonly received: number;
}

export interface RemoteProducerHost {
  readonly transport: Transport;
  readonly node: string;
  readonly incarnation: string;
  nextEpoch(): number;
  /** Unhandled events of an earlier subscription with this key: its successor takes them first. */
  takeOrphans(key: string): HeldEntry[];
  keepOrphans(key: string, entries: HeldEntry[]): void;
  /** An orphan its old consumer handled after all: acknowledged, it is no longer for the next subscription. */
  releaseOrphan(key: string, entry: HeldEntry): void;
  register(key: string, proxy: RemoteProducer): void;
  unregister(key: string): void;
  reportExcess(key: string, excess: number): void;
  /** A subscription ended: its final counts. */
  subscriptionEnded(record: DemandRecord): void;
}

let nextProxyId = 1_000_000_000;

const demandRecord = (sub: RemoteSubscription): DemandRecord => ({
  side: 'consumer',
  key: sub.key,
  epoch: sub.epoch,
  asked: sub.hwm,
  received: sub.received,
});

/**
 * Stands in, on the consumer's node, for a producer on another node. A local
 * consumer subscribes to it as to any stage; it carries subscribe, ask and
 * cancel over the wire and hands arriving events to the consumer never beyond
 * what the consumer asked for. Events are acknowledged once handled; those
 * not handled when a subscription ends, and those sent to it that arrive
 * only after it ended, go to the next subscription of the same consumer to
 * the same producer, so a restarted or stalled consumer loses nothing. A
 * consumer that still handles events after its subscription ended (they
 * were in its mailbox, queue or tasks) reports them, and they are
 * acknowledged then.
 */
export class RemoteProducer implements StagePeer {
  readonly id = nextProxyId++;
  readonly name: string;
  readonly label: string;
  readonly alive = true;
  readonly wantsHandled = true;
  private readonly subs = new Map<number, RemoteSubscription>();
  /** Ended subscriptions whose consumer holds events it may still report handled. */
  private readonly closing = new Map<number, RemoteSubscription>();

  constructor(
    private readonly host: RemoteProducerHost,
    /** The producer's instance address, `stage@node`. */
    readonly instance: string,
  ) {
    this.name = instance;
    this.label = instance;
  }

  get node(): string {
    return this.instance.slice(this.instance.lastIndexOf('@') + 1);
  }

  /** Messages from the local consumer stage. */
  deliver(message: StageMessage): void {
    switch (message.t) {
      case 'subscribe':
        this.subscribe(message.subscription, message.consumer, message.options as WireSubscribeOptions);
        return;
      case 'ask': {
        const sub = this.subs.get(message.id);
        if (sub === undefined) return;
        sub.owed += message.count;
        this.flush(sub);
        // The producer is gone once it cancelled: only what is held is left to hand on.
        if (sub.cancelled === undefined) this.askWire(sub);
        return;
      }
      case 'handled': {
        const sub = this.subs.get(message.id) ?? this.closing.get(message.id);
        if (sub !== undefined) this.handled(sub, message.count);
        return;
      }
      case 'cancel-up': {
        const sub = this.subs.get(message.id);
        if (sub === undefined) return;
        this.send({
          t: 'cancel',
          key: sub.key,
          epoch: sub.epoch,
          from: 'consumer',
          kind: message.info.kind,
          reason: toWireReason(message.info.reason),
        });
        this.end(sub);
        // The producer is remote and may be gone: confirm the cancel here, as the producer would.
        if (message.info.kind === 'cancel') sub.consumer.deliver({ t: 'cancel-down', id: sub.id, info: message.info });
        return;
      }
      default:
        return;
    }
  }

  /**
   * A wire message for one of this proxy's subscriptions: 'held' when the
   * entry is acknowledged later (once its events are handled), 'done' when it
   * can be acknowledged now, 'unknown' when no live subscription has the key.
   */
  receive(message: WireMessage, inbox: string, entryId: string, bytes: number): 'held' | 'done' | 'unknown' {
    const sub = [...this.subs.values()].find((s) => s.key === message.key);
    if (sub === undefined) return 'unknown';
    if (message.t === 'events' && message.epoch < sub.epoch) {
      // Sent to an earlier subscription of this key and read only now (this node was stalled or cut off while they
      // were on the wire, and subscribed again first): the producer counts them sent, so this one takes them, as orphans.
      sub.entries.push({ inbox, entryId, events: message.events, delivered: 0, handled: 0, bytes });
      this.flush(sub);
      return 'held';
    }
    if (message.epoch !== sub.epoch) return 'done';
    if (message.t === 'events') {
      // Drop what this epoch already received: a re-sent batch.
      const skip = Math.max(0, sub.received - message.seq);
      if (skip >= message.events.length) return 'done';
      const events = skip === 0 ? message.events : message.events.slice(skip);
      // The hop's far side: a child of the sending node's span when the batch carries its context.
      startSpan(`receive ${this.instance}`, {
        kind: 'consumer',
        parent: message.tp,
        attributes: () => ({
          'messaging.system': 'stagefabric',
          'messaging.operation.type': 'receive',
          'messaging.batch.message_count': events.length,
          'stagefabric.stage': this.instance,
          'stagefabric.consumer': sub.consumerInbox,
          'stagefabric.node': this.host.node,
          'stagefabric.seq': message.seq + skip,
        }),
      }).end();
      sub.received += events.length;
      sub.entries.push({ inbox, entryId, events, delivered: 0, handled: 0, bytes });
      // More than was asked for means a producer broke the protocol; held, never handed on beyond demand.
      if (sub.received > sub.hwm) this.host.reportExcess(sub.key, sub.received - sub.hwm);
      this.flush(sub);
      // What arrived makes room under maxDemand for demand held back (a manual consumer may ask beyond it).
      this.askWire(sub);
      return 'held';
    }
    if (message.t === 'cancel' && message.from === 'producer') {
      sub.cancelled = { kind: message.kind, reason: fromWireReason(message.reason) };
      // Events it sent before the cancel and the consumer has not asked for yet go first.
      this.flush(sub);
    }
    return 'done';
  }

  /**
   * The producer's node died or restarted: every subscription ends as
   * GenStage's `noconnection`, but one whose producer had already cancelled,
   * which still hands on what it holds.
   */
  nodeDown(): void {
    for (const sub of [...this.subs.values()]) {
      if (sub.cancelled !== undefined) continue;
      this.end(sub);
      sub.consumer.deliver({ t: 'cancel-down', id: sub.id, info: { kind: 'down', reason: 'noconnection' } });
    }
  }

  /**
   * A message of this subscription could not be sent (after its retries):
   * the subscription ends as `noconnection`, and the producer is told, so
   * the consumer subscribes anew as its cancel mode says.
   */
  endSubscription(key: string, epoch: number): void {
    const sub = [...this.subs.values()].find((s) => s.key === key && s.epoch === epoch);
    if (sub === undefined) return;
    this.send({ t: 'cancel', key, epoch, from: 'consumer', kind: 'down', reason: 'noconnection' });
    this.end(sub);
    sub.consumer.deliver({ t: 'cancel-down', id: sub.id, info: { kind: 'down', reason: 'noconnection' } });
  }

  /** Asked and received of every live subscription. */
  demand(): DemandRecord[] {
    return [...this.subs.values()].map(demandRecord);
  }

  get subscriptionCount(): number {
    return this.subs.size;
  }

  private subscribe(subscription: Subscription, consumer: StagePeer, options: WireSubscribeOptions): void {
    const consumerInbox = `${consumer.label}@${this.host.node}`;
    const key = `${consumerInbox}>${this.instance}`;
    const sub: RemoteSubscription = {
      id: subscription.id,
      consumer,
      key,
      epoch: this.host.nextEpoch(),
      consumerInbox,
      owed: 0,
      hwm: 0,
      received: 0,
      maxDemand: options.maxDemand ?? SUBSCRIPTION_DEFAULTS.maxDemand,
      entries: this.takeOrphans(key),
      cancelled: undefined,
    };
    this.subs.set(sub.id, sub);
    this.host.register(key, this);
    const wireOptions: Record<string, unknown> = {};
    for (const k of ['maxDemand', 'minDemand', 'cancel', 'partition'] as const) if (options[k] !== undefined) wireOptions[k] = options[k];
    const options_ = wireOptions as WireSubscribeOptions;
    this.send({ t: 'subscribe', key, epoch: sub.epoch, consumer: consumerInbox, incarnation: this.host.incarnation, options: options_ });
  }

  /**
   * Unhandled events of this consumer's earlier subscriptions to this
   * producer, to hand on first: from their `handled` on, as those delivered
   * to a consumer that did not report them may never have been handled.
   */
  private takeOrphans(key: string): HeldEntry[] {
    // The earlier subscription's consumer is done with: what it still held belongs to this one now.
    for (const [id, old] of this.closing) if (old.key === key) this.closing.delete(id);
    return this.host.takeOrphans(key).map((e) => ({
      inbox: e.inbox,
      entryId: e.entryId,
      events: e.handled === 0 ? e.events : e.events.slice(e.handled),
      delivered: 0,
      handled: 0,
      bytes: e.bytes,
    }));
  }

  /** Hands held events to the consumer, never beyond what it asked for; a cancel held behind them follows the last. */
  private flush(sub: RemoteSubscription): void {
    for (const entry of sub.entries) {
      if (sub.owed === 0) break;
      const left = entry.events.length - entry.delivered;
      if (left === 0) continue;
      const n = Math.min(left, sub.owed);
      const events = n === entry.events.length ? (entry.events as unknown[]) : entry.events.slice(entry.delivered, entry.delivered + n);
      entry.delivered += n;
      sub.owed -= n;
      sub.consumer.deliver({ t: 'events', id: sub.id, events });
    }
    if (sub.cancelled !== undefined && this.subs.get(sub.id) === sub && this.undelivered(sub) === 0) {
      this.end(sub);
      sub.consumer.deliver({ t: 'cancel-down', id: sub.id, info: sub.cancelled });
    }
  }

  /**
   * Asks the producer for what neither the wire nor the held entries will
   * cover, never more than maxDemand outstanding on the wire: the producer
   * refuses asks beyond it. What is held back is asked as events arrive.
   */
  private askWire(sub: RemoteSubscription): void {
    const coming = sub.hwm - sub.received + this.undelivered(sub);
    const room = sub.maxDemand - (sub.hwm - sub.received);
    const more = Math.min(sub.owed - coming, room);
    if (more <= 0) return;
    sub.hwm += more;
    this.send({ t: 'ask', key: sub.key, epoch: sub.epoch, hwm: sub.hwm });
  }

  private undelivered(sub: RemoteSubscription): number {
    let n = 0;
    for (const e of sub.entries) n += e.events.length - e.delivered;
    return n;
  }

  private handled(sub: RemoteSubscription, count: number): void {
    let left = count;
    const done: HeldEntry[] = [];
    for (const entry of sub.entries) {
      if (left === 0) break;
      const n = Math.min(left, entry.delivered - entry.handled);
      entry.handled += n;
      left -= n;
      if (entry.handled === entry.events.length) done.push(entry);
    }
    if (done.length === 0) return;
    sub.entries.splice(0, done.length);
    this.ackEntries(done);
    if (this.closing.get(sub.id) === sub) {
      for (const entry of done) this.host.releaseOrphan(sub.key, entry);
      if (!this.awaitsReports(sub)) this.closing.delete(sub.id);
    }
  }

  /** The consumer was handed events of this subscription it has not reported handled yet. */
  private awaitsReports(sub: RemoteSubscription): boolean {
    return sub.entries.some((e) => e.delivered > e.handled);
  }

  private ackEntries(entries: readonly HeldEntry[]): void {
    const byInbox = new Map<string, string[]>();
    for (const e of entries) {
      const ids = byInbox.get(e.inbox);
      if (ids === undefined) byInbox.set(e.inbox, [e.entryId]);
      else ids.push(e.entryId);
    }
    for (const [inbox, ids] of byInbox) this.host.transport.ack(inbox, ids);
  }

  /**
   * Ends a subscription. What the consumer had not handled waits for its
   * next subscription; until then, what it reports handled of the events
   * it was handed is acknowledged, and no longer waits.
   */
  private end(sub: RemoteSubscription): void {
    this.subs.delete(sub.id);
    this.host.unregister(sub.key);
    this.host.subscriptionEnded(demandRecord(sub));
    const unhandled = sub.entries.filter((e) => e.handled < e.events.length);
    if (unhandled.length > 0) this.host.keepOrphans(sub.key, unhandled);
    if (this.awaitsReports(sub)) this.closing.set(sub.id, sub);
  }

  private send(message: WireMessage): void {
    this.host.transport.send(this.instance, message);
  }
}
