import { EventBuffer } from './buffer.js';
import type { Downstream } from './consumer-side.js';
import { createDispatcher } from './dispatchers/create-dispatcher.js';
import type { Dispatcher, DispatcherHost } from './dispatchers/dispatcher.js';
import { describeValue, FabricError } from './errors.js';
import { checkBufferSize, checkOneOf, PRODUCER_DEFAULTS } from './options.js';
import type { AnyStageSpec } from './spec.js';
import type { StageCore } from './stage-core.js';
import type { StagePeer } from './stage-protocol.js';
import type { CancelInfo, SubscribeOptions, Subscription } from './types.js';

/** The specs of the kinds that produce: producer and producer_consumer. */
export type ProducingSpec = Extract<AnyStageSpec, { readonly kind: 'producer' | 'producer_consumer' }>;

export type DemandMode = 'forward' | 'accumulate';

/** A subscription as the producer holds it. */
export interface DownstreamLink {
  readonly subscription: Subscription;
  readonly consumer: StagePeer;
  /** Events asked for by the consumer, cumulative. */
  asked: number;
  /** Events sent to the consumer, cumulative. */
  sent: number;
}

/** What an accumulating producer holds back (GenStage's `events` list). */
type Accumulated = { readonly demand: number } | { readonly events: unknown[] };

/**
 * The producer side of a stage (producer, producer_consumer): its
 * subscribers, the dispatcher that shares events among them, the buffer of
 * events emitted beyond their demand, and a producer's demand mode. Demand
 * the dispatcher forwards is met from the buffer first, then by a
 * producer's handleDemand; a producer_consumer counts it, and its consumer
 * side goes on with the input it holds.
 */
export class ProducerSide implements Downstream {
  readonly downstream = new Map<number, DownstreamLink>();
  readonly buffer: EventBuffer<unknown>;
  readonly dispatcher: Dispatcher<unknown>;
  private mode: DemandMode;
  /** A producer accumulating: demand and emitted events held back, in order, until it forwards again. */
  private readonly accumulated: Accumulated[] = [];
  /** producer_consumer: demand its consumers forwarded that no event has met yet. */
  private unmet = 0;
  /** Events dropped from the buffer or the dispatcher's queues. */
  dropped = 0;
  eventsOut = 0;

  /** Takes the producer options init returned (bufferSize, bufferKeep, demand, dispatcher); throws SF_BAD_OPTION naming a bad one. */
  constructor(
    private readonly core: StageCore,
    private readonly spec: ProducingSpec,
    where: string,
    init: { readonly [key: string]: unknown },
  ) {
    const bufferSize = checkBufferSize(where, init.bufferSize ?? PRODUCER_DEFAULTS.bufferSize);
    const keep = checkOneOf(where, 'bufferKeep', init.bufferKeep ?? PRODUCER_DEFAULTS.bufferKeep, ['first', 'last'] as const);
    this.mode = checkOneOf(where, 'demand', init.demand ?? PRODUCER_DEFAULTS.demand, ['forward', 'accumulate'] as const);
    this.buffer = new EventBuffer(bufferSize, keep);
    this.dispatcher = createDispatcher(where, init.dispatcher, bufferSize, keep, this.dispatcherHost);
  }

  get demandMode(): DemandMode {
    return this.mode;
  }

  get wantsEvents(): boolean {
    return this.unmet > 0;
  }

  /** Events emitted and not sent yet: the buffer's and the dispatcher's own queues. */
  get holding(): number {
    return this.buffer.length + this.dispatcher.held();
  }

  /** A consumer subscribes (`subscribe`): handleSubscribe, then the dispatcher takes it in or refuses it. */
  subscribe(subscription: Subscription, consumer: StagePeer, options: SubscribeOptions): Promise<void> | undefined {
    const core = this.core;
    const link: DownstreamLink = { subscription, consumer, asked: 0, sent: 0 };
    // Known before handleSubscribe runs, so the callback may already cancel it.
    this.downstream.set(subscription.id, link);
    const admit = () => {
      if (!core.alive) return undefined;
      try {
        const forward = this.dispatcher.subscribe(subscription.id, options, consumer);
        if (forward > 0) return this.serveDemand(forward);
      } catch (error) {
        this.downstream.delete(subscription.id);
        consumer.deliver({ t: 'cancel-down', id: subscription.id, info: { kind: 'cancel', reason: error } });
      }
      return undefined;
    };
    const pending = core.runCallback(
      'handleSubscribe',
      this.spec.handleSubscribe,
      ['consumer', options, subscription],
      core.rules.subscribe,
      (r) => {
        // Only the consumer side of a subscription may take its demand in hand, as in GenStage.
        if (r.demand !== undefined && r.demand !== 'automatic') {
          throw new FabricError(
            'SF_BAD_RETURN',
            `stage ${core.label}: handleSubscribe('consumer') returned demand ${describeValue(r.demand)}; a producer's side is always 'automatic'`,
            { stage: core.label },
          );
        }
      },
    );
    return pending === undefined ? admit() : pending.then(admit);
  }

  /** A consumer asks for `count` more events (`ask`). */
  ask(id: number, count: number): Promise<void> | undefined {
    const link = this.downstream.get(id);
    if (link === undefined) return undefined;
    link.asked += count;
    return this.serveDemand(this.dispatcher.ask(id, count));
  }

  /** Demand the dispatcher gave back to a subscription: like an ask, but the consumer did not ask it again. */
  reask(id: number, count: number): Promise<void> | undefined {
    if (!this.downstream.has(id)) return undefined;
    return this.serveDemand(this.dispatcher.ask(id, count));
  }

  /**
   * Demand the dispatcher forwarded (GenStage's handle_dispatcher_result):
   * met from the buffer first, the rest by handleDemand, or held back while
   * accumulating. A producer_consumer adds it to what its consumers want and
   * handles the input it holds.
   */
  private serveDemand(counter: number): Promise<void> | undefined {
    const spec = this.spec;
    if (spec.kind === 'producer_consumer') {
      this.unmet += counter;
      this.takeFromBuffer(this.unmet);
      return this.core.inputWanted();
    }
    const left = this.takeFromBuffer(counter);
    if (left <= 0) return undefined;
    if (this.mode === 'accumulate') {
      this.accumulated.push({ demand: left });
      return undefined;
    }
    return this.core.runCallback('handleDemand', spec.handleDemand, [left], this.core.rules.common);
  }

  /**
   * GenStage's take_from_buffer: dispatches up to `counter` buffered events,
   * handing out the infos queued among them as they are reached. Returns
   * what is left of `counter`.
   */
  private takeFromBuffer(counter: number): number {
    const buffer = this.buffer;
    while (counter > 0 && buffer.length > 0) {
      const events = buffer.take(counter);
      counter -= events.length;
      if (events.length > 0) this.emit(events, true);
      const infos = buffer.takeMarker();
      if (infos !== undefined) {
        for (const message of infos) this.dispatcher.info(message);
      } else if (events.length === 0) {
        break;
      }
    }
    return counter;
  }

  private readonly send = (id: number, events: unknown[]): void => {
    const link = this.downstream.get(id);
    if (link === undefined) return;
    link.sent += events.length;
    this.eventsOut += events.length;
    link.consumer.deliver({ t: 'events', id, events });
  };

  private readonly dispatcherHost: DispatcherHost<unknown> = {
    send: this.send,
    reask: (id, count) => this.core.deliver({ t: 'reask', id, count }),
    info: (message) => this.core.deliver({ t: 'info', message }),
    overflow: (partition, dropped, capacity) => this.reportDropped(dropped, capacity, partition),
  };

  /**
   * Events the stage emitted (GenStage's dispatch_events): the dispatcher
   * places what the demand it forwarded allows, the rest goes to the buffer.
   * A producer accumulating holds them back instead, to dispatch them in
   * order when it forwards.
   */
  emit(events: unknown[], fromBuffer = false): void {
    if (this.spec.kind === 'producer' && this.mode === 'accumulate') {
      this.accumulated.push({ events });
      return;
    }
    const left = this.dispatcher.dispatch(events);
    if (this.spec.kind === 'producer_consumer') this.unmet = Math.max(0, this.unmet - (events.length - left.length));
    if (left.length === 0) return;
    // Taken from the buffer and not placed: back to the front, so the buffer keeps its order.
    if (fromBuffer) this.buffer.unshift(left);
    else this.bufferEvents(left);
  }

  /** GenStage's buffer_events: keeps by bufferSize and bufferKeep, reports what is dropped. */
  private bufferEvents(events: readonly unknown[]): void {
    const dropped = this.buffer.push(events, this.releaseInfo);
    if (dropped > 0) this.reportDropped(dropped, this.buffer.capacity);
  }

  /** An info whose events were dropped from the buffer still reaches the dispatcher, and so handleInfo. */
  private readonly releaseInfo = (message: unknown): void => this.dispatcher.info(message);

  private reportDropped(dropped: number, capacity: number, partition?: string | number): void {
    this.dropped += dropped;
    const stage = this.core.label;
    const keep = this.buffer.keep;
    this.core.system.report(
      partition === undefined
        ? { type: 'buffer-overflow', stage, dropped, bufferSize: capacity, keep }
        : { type: 'buffer-overflow', stage, dropped, bufferSize: capacity, keep, partition },
    );
  }

  /** GenStage's sync_info: to handleInfo behind the events buffered now, at once when none is. */
  info(message: unknown): void {
    if (!this.buffer.pushMarker(message)) this.dispatcher.info(message);
  }

  /** A consumer ended a subscription (`cancel-up`): a `cancel` is confirmed, then handleCancel. */
  onCancel(id: number, info: CancelInfo): Promise<void> | undefined {
    const link = this.downstream.get(id);
    if (link === undefined) return undefined;
    this.downstream.delete(id);
    const forward = this.dispatcher.cancel(id);
    if (info.kind === 'cancel') link.consumer.deliver({ t: 'cancel-down', id, info });
    const core = this.core;
    const pending = core.runCallback('handleCancel', this.spec.handleCancel, [info, link.subscription], core.rules.common);
    const after = () => (core.alive && forward > 0 ? this.serveDemand(forward) : undefined);
    return pending === undefined ? after() : pending.then(after);
  }

  /**
   * Cancels a subscription this side holds, as if its consumer had
   * (the consumer gets the `cancel-down`); false when it holds none of that id.
   */
  cancel(id: number, reason: unknown): boolean {
    if (!this.downstream.has(id)) return false;
    this.core.deliver({ t: 'cancel-up', id, info: { kind: 'cancel', reason } });
    return true;
  }

  /** GenStage.demand/2: 'accumulate' holds demand and emitted events back; 'forward' replays them. */
  setDemandMode(mode: DemandMode): Promise<void> | undefined {
    this.mode = mode;
    if (mode === 'forward' && this.accumulated.length > 0) return this.replayAccumulated(this.accumulated.splice(0), 0);
    return undefined;
  }

  /** Forwarding again: what accumulated is served and dispatched in the order it came, each demand on its own. */
  private replayAccumulated(entries: readonly Accumulated[], from: number): Promise<void> | undefined {
    for (let i = from; i < entries.length && this.core.alive; i++) {
      const entry = entries[i];
      if (entry === undefined) break;
      if ('events' in entry) {
        this.emit(entry.events);
        continue;
      }
      const pending = this.serveDemand(entry.demand);
      if (pending !== undefined) return pending.then(() => this.replayAccumulated(entries, i + 1));
    }
    return undefined;
  }

  /** The stage exited: every consumer hears it (`info` is `down`). */
  exited(info: CancelInfo): void {
    for (const link of this.downstream.values()) link.consumer.deliver({ t: 'cancel-down', id: link.subscription.id, info });
    this.downstream.clear();
  }

  stats(): { readonly id: number; readonly consumer: string; readonly asked: number; readonly sent: number }[] {
    return [...this.downstream.values()].map((l) => ({ id: l.subscription.id, consumer: l.consumer.label, asked: l.asked, sent: l.sent }));
  }
}
