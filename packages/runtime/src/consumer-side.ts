import { FabricError, isFabricError } from './errors.js';
import { checkOneOf, resolveSubscription } from './options.js';
import type { AnyStageSpec } from './spec.js';
import { askAfterBatch, batchLimit, pendingAfterBatch } from './split-batches.js';
import type { StageCore } from './stage-core.js';
import type { StagePeer } from './stage-protocol.js';
import {
  type CancelInfo,
  type CancelMode,
  type ExitReason,
  isCleanExit,
  type StageAddress,
  type SubscribeOptions,
  type Subscription,
} from './types.js';

/** The specs of the kinds that consume: consumer and producer_consumer. */
export type ConsumingSpec = Extract<AnyStageSpec, { readonly kind: 'consumer' | 'producer_consumer' }>;

/** A subscription as the consumer holds it. */
export interface UpstreamLink {
  readonly subscription: Subscription;
  readonly producer: StagePeer;
  readonly cancel: CancelMode;
  /** Producers of one group are followed out on a clean exit only once the last of them has gone. */
  readonly group: string | undefined;
  manual: boolean;
  readonly minDemand: number;
  readonly maxDemand: number;
  /** Events asked for and not yet received. */
  pending: number;
}

/** Where a producer_consumer's consumer side hands its output: its own producer side. */
export interface Downstream {
  /** Its consumers want events that no event has met yet. */
  readonly wantsEvents: boolean;
  /** An info queued among the held input reaches the producer side in its place (GenStage's sync_info). */
  info(message: unknown): void;
}

/**
 * What a producer_consumer holds until downstream demand lets it go on: the
 * events it received, with the cancels and infos that arrived behind them
 * (GenStage queues those too, so they keep their place).
 */
type HeldInput =
  | { readonly kind: 'events'; readonly link: UpstreamLink; readonly events: unknown[] }
  | { readonly kind: 'cancel'; readonly link: UpstreamLink; readonly info: CancelInfo }
  | { readonly kind: 'info'; readonly message: unknown };

/**
 * The consumer side of a stage (consumer, producer_consumer): its
 * subscriptions to producers, the batches it hands handleEvents and the
 * asks that follow them (GenStage's split_batches), manual demand, cancel
 * modes and subscription groups. A producer_consumer's side holds what it
 * receives until its producer side has demand for it.
 */
export class ConsumerSide {
  readonly upstream = new Map<number, UpstreamLink>();
  /** producer_consumer: input received and not yet handled, in the order it came. */
  private readonly held: HeldInput[] = [];
  eventsIn = 0;
  /** When the last events arrived, by the system's clock; undefined before the first. */
  lastEventAtMs: number | undefined;
  batchesIn = 0;

  constructor(
    private readonly core: StageCore,
    private readonly spec: ConsumingSpec,
    /** A producer_consumer's producer side: input is held until it wants events. Undefined for a consumer. */
    private readonly downstream: Downstream | undefined,
  ) {}

  /** Subscribes this consumer to a producer (GenStage's consumer_subscribe). */
  async subscribe(options: SubscribeOptions): Promise<Subscription | undefined> {
    const core = this.core;
    const where = `stage ${core.label}: subscribe`;
    const resolved = resolveSubscription(where, options);
    const producer = core.system.lookup(options.to);
    if (producer === undefined || !producer.alive) {
      const reason = 'noproc';
      if (resolved.cancel === 'temporary') {
        throw new FabricError('SF_NO_STAGE', `${where}: no stage ${describeAddress(options.to)} to subscribe to`, { stage: core.label });
      }
      await core.exit(
        new FabricError('SF_NO_STAGE', `${where}: no stage ${describeAddress(options.to)} (${reason})`, { stage: core.label }),
      );
      return undefined;
    }
    const subscription: Subscription = { id: core.system.nextSubscriptionId(), producer, consumer: core };
    const link: UpstreamLink = {
      subscription,
      producer,
      cancel: resolved.cancel,
      group: resolved.group,
      manual: false,
      minDemand: resolved.minDemand,
      maxDemand: resolved.maxDemand,
      pending: 0,
    };
    // Known before handleSubscribe runs, so the callback may already ask or cancel.
    this.upstream.set(subscription.id, link);
    producer.deliver({ t: 'subscribe', subscription, consumer: core, options });
    try {
      const pending = core.runCallback(
        'handleSubscribe',
        this.spec.handleSubscribe,
        ['producer', options, subscription],
        core.rules.subscribe,
        (r) => {
          if (r.demand !== undefined) {
            link.manual =
              checkOneOf(`stage ${core.label}: handleSubscribe`, 'demand', r.demand, ['automatic', 'manual'] as const) === 'manual';
          }
        },
      );
      if (pending !== undefined) await pending;
    } catch (error) {
      // A bad return from handleSubscribe stops the consumer, as GenStage's bad_return_value; the caller sees why.
      await core.exit(error as ExitReason);
      return subscription;
    }
    if (!core.alive || link.manual || this.upstream.get(subscription.id) !== link) return subscription;
    link.pending += resolved.maxDemand;
    producer.deliver({ t: 'ask', id: subscription.id, count: resolved.maxDemand });
    return subscription;
  }

  /** Asks for `count` (a non-negative integer) more events on a subscription this side holds. */
  ask(id: number, count: number): void {
    const link = this.upstream.get(id);
    if (link === undefined || count === 0) return;
    link.pending += count;
    link.producer.deliver({ t: 'ask', id, count });
  }

  /** Events from a producer. */
  onEvents(id: number, events: unknown[]): Promise<void> | undefined {
    const link = this.upstream.get(id);
    if (link === undefined) return undefined; // cancelled meanwhile: GenStage drops these too
    this.eventsIn += events.length;
    this.lastEventAtMs = this.core.system.clock.now();
    if (this.downstream !== undefined) {
      this.held.push({ kind: 'events', link, events });
      return this.drainHeld(this.downstream);
    }
    return this.receive(link, events);
  }

  /** producer_consumer: its consumers want events; the input held goes on. */
  inputWanted(): Promise<void> | undefined {
    return this.downstream !== undefined && this.held.length > 0 ? this.drainHeld(this.downstream) : undefined;
  }

  /** GenStage's sync_info on a producer_consumer: queued behind the input held, if any; false when none is held. */
  holdInfo(message: unknown): boolean {
    if (this.held.length === 0) return false;
    this.held.push({ kind: 'info', message });
    return true;
  }

  /** Input received and not handled yet (a producer_consumer's). */
  get holding(): number {
    return this.held.length;
  }

  /**
   * Events reach handleEvents in batches of at most maxDemand − minDemand,
   * and after each batch the consumer asks again as split-batches.ts says.
   * Manual demand: one batch, and the consumer's code asks.
   */
  private receive(link: UpstreamLink, events: unknown[]): Promise<void> | undefined {
    if (events.length > link.pending) {
      this.core.system.report({
        type: 'excess-events',
        stage: this.core.label,
        subscription: link.subscription.id,
        excess: events.length - link.pending,
      });
    }
    if (link.manual) {
      link.pending = Math.max(0, link.pending - events.length);
      return this.handleBatch(link, events, 0);
    }
    const limit = batchLimit(link);
    // The common case: one batch, no copy.
    if (events.length <= limit) return this.handleBatch(link, events, this.account(link, events.length));
    return this.receiveBatches(link, events, limit);
  }

  private async receiveBatches(link: UpstreamLink, events: unknown[], limit: number): Promise<void> {
    for (let offset = 0; offset < events.length && this.core.alive; offset += limit) {
      const batch = events.slice(offset, offset + limit);
      const pending = this.handleBatch(link, batch, this.account(link, batch.length));
      if (pending !== undefined) await pending;
    }
  }

  /** Lowers outstanding demand by a batch; returns how much to ask for after handling it. */
  private account(link: UpstreamLink, size: number): number {
    const ask = askAfterBatch(link.pending, size, link);
    link.pending = pendingAfterBatch(link.pending, size, link);
    return ask;
  }

  private handleBatch(link: UpstreamLink, batch: unknown[], askAfter: number): Promise<void> | undefined {
    this.batchesIn++;
    const core = this.core;
    const observer = core.system.observer;
    const started = observer === undefined ? 0 : performance.now();
    const ask = () => {
      observer?.batchHandled(core.label, batch.length, (performance.now() - started) / 1000);
      // A stage whose work outlives handleEvents reports itself, with ctx.handled, when it is done.
      if (link.producer.wantsHandled && this.spec.reportsHandled !== true)
        link.producer.deliver({ t: 'handled', id: link.subscription.id, count: batch.length });
      if (askAfter > 0 && core.alive && this.upstream.get(link.subscription.id) === link) {
        link.producer.deliver({ t: 'ask', id: link.subscription.id, count: askAfter });
      }
    };
    const pending = core.runCallback('handleEvents', this.spec.handleEvents, [batch, link.subscription], core.rules.common);
    if (pending === undefined) {
      ask();
      return undefined;
    }
    return pending.then(ask);
  }

  /** producer_consumer: handles held input while downstream has demand; synchronous until a callback returns a promise. */
  private drainHeld(downstream: Downstream): Promise<void> | undefined {
    while (downstream.wantsEvents && this.core.alive) {
      const item = this.held.shift();
      if (item === undefined) return undefined;
      const pending = this.handleHeld(downstream, item);
      if (pending !== undefined) return pending.then(() => this.drainHeldAsync(downstream));
    }
    return undefined;
  }

  private async drainHeldAsync(downstream: Downstream): Promise<void> {
    while (downstream.wantsEvents && this.core.alive) {
      const item = this.held.shift();
      if (item === undefined) return;
      const pending = this.handleHeld(downstream, item);
      if (pending !== undefined) await pending;
    }
  }

  private handleHeld(downstream: Downstream, item: HeldInput): Promise<void> | undefined {
    if (item.kind === 'events') return this.receive(item.link, item.events);
    if (item.kind === 'cancel') return this.invokeCancel(item.link, item.info);
    downstream.info(item.message);
    return undefined;
  }

  /** The producer ended a subscription (`cancel-down`). */
  onCancel(id: number, info: CancelInfo): Promise<void> | undefined {
    const link = this.upstream.get(id);
    if (link === undefined) return undefined;
    this.upstream.delete(id);
    // Events received before the cancel are handled before it, as GenStage's schedule_cancel.
    if (this.held.length > 0) {
      this.held.push({ kind: 'cancel', link, info });
      return undefined;
    }
    return this.invokeCancel(link, info);
  }

  /** handleCancel for a subscription upstream, then what its cancel mode asks. */
  private invokeCancel(link: UpstreamLink, info: CancelInfo): Promise<void> | undefined {
    const core = this.core;
    const pending = core.runCallback('handleCancel', this.spec.handleCancel, [info, link.subscription], core.rules.common);
    const follow = () => {
      if (!core.alive) return undefined;
      // Refused as a duplicate: the first subscription still runs, so the cancel mode does not apply (as GenStage).
      if (isFabricError(info.reason, 'SF_ALREADY_SUBSCRIBED')) return undefined;
      const exits = link.cancel === 'permanent' || (link.cancel === 'transient' && !isCleanExit(info.reason));
      if (!exits) return undefined;
      if (isCleanExit(info.reason) && link.group !== undefined) {
        // Another producer of its group still feeds this stage: follow them out with the last.
        for (const other of this.upstream.values()) if (other.group === link.group) return undefined;
      }
      const reason = info.reason as ExitReason;
      // Its producer finished: hand on what is queued and buffered first, then exit.
      return isCleanExit(reason) ? core.exitWhenDrained(reason) : core.exit(reason);
    };
    return pending === undefined ? follow() : pending.then(follow);
  }

  /**
   * Cancels a subscription this side holds; false when it holds none of
   * that id. The producer confirms with a cancel of its own; handleCancel
   * and the cancel mode run then, as in GenStage.
   */
  cancel(id: number, reason: unknown): boolean {
    const link = this.upstream.get(id);
    if (link === undefined) return false;
    link.producer.deliver({ t: 'cancel-up', id, info: { kind: 'cancel', reason } });
    return true;
  }

  /** The stage exited: every producer hears it (`info` is `down`), and what was held is gone. */
  exited(info: CancelInfo): void {
    for (const link of this.upstream.values()) link.producer.deliver({ t: 'cancel-up', id: link.subscription.id, info });
    this.upstream.clear();
    this.held.length = 0;
  }

  stats(): { readonly id: number; readonly producer: string; readonly pending: number }[] {
    return [...this.upstream.values()].map((l) => ({ id: l.subscription.id, producer: l.producer.label, pending: l.pending }));
  }

  subscriptions(): Subscription[] {
    return [...this.upstream.values()].map((l) => l.subscription);
  }
}

function describeAddress(address: StageAddress): string {
  return typeof address === 'string' ? `named "${address}"` : address.label;
}
