import { EventBuffer } from './buffer.js';
import type { TimerHandle } from './clock.js';
import { createDispatcher } from './dispatchers/create-dispatcher.js';
import type { Dispatcher, DispatcherHost } from './dispatchers/dispatcher.js';
import { describeValue, FabricError, isFabricError } from './errors.js';
import { Mailbox } from './mailbox.js';
import { checkBufferSize, checkOneOf, PRODUCER_DEFAULTS, resolveSubscription } from './options.js';
import { isThenable, type ReadResult, type ResultRules, readResult } from './result.js';
import type { AnyStageSpec, ProducerSpec, StageContext } from './spec.js';
import { isStagePeer, type MailboxMessage, type StagePeer } from './stage-protocol.js';
import type { StageSystem } from './system.js';
import {
  type CallFrom,
  type CancelInfo,
  type CancelMode,
  type ExitReason,
  isCleanExit,
  type StageAddress,
  type StageKind,
  type StageRef,
  type SubscribeOptions,
  type Subscription,
} from './types.js';

/** A subscription as the consumer holds it. */
interface UpstreamLink {
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

/** A subscription as the producer holds it. */
interface DownstreamLink {
  readonly subscription: Subscription;
  readonly consumer: StagePeer;
  /** Events asked for by the consumer, cumulative. */
  asked: number;
  /** Events sent to the consumer, cumulative. */
  sent: number;
}

/** What a producer_consumer holds until downstream demand lets it go on. */
type PcQueued =
  | { readonly kind: 'events'; readonly link: UpstreamLink; readonly events: unknown[] }
  | { readonly kind: 'cancel'; readonly link: UpstreamLink; readonly info: CancelInfo }
  | { readonly kind: 'info'; readonly message: unknown };

/** What an accumulating producer holds back (GenStage's `events` list). */
type Accumulated = { readonly demand: number } | { readonly events: unknown[] };

export type StageStatus = 'starting' | 'running' | 'exited';

/** A snapshot of one stage, for metrics, status and tests. */
export interface StageStats {
  readonly ref: StageRef;
  readonly kind: StageKind;
  readonly status: StageStatus;
  readonly mailbox: number;
  readonly bufferLength: number;
  readonly bufferCapacity: number;
  readonly bufferDropped: number;
  /** A producer's demand mode (GenStage.demand/1); undefined for a consumer. */
  readonly demandMode: 'forward' | 'accumulate' | undefined;
  readonly eventsIn: number;
  readonly eventsOut: number;
  readonly batchesIn: number;
  /** When the last events arrived, by the system's clock; undefined before the first. */
  readonly lastEventAtMs: number | undefined;
  /** Per subscription where this stage is the producer: what the consumer asked and what it was sent. */
  readonly downstream: readonly { readonly id: number; readonly consumer: string; readonly asked: number; readonly sent: number }[];
  /** Per subscription where this stage is the consumer: demand outstanding. */
  readonly upstream: readonly { readonly id: number; readonly producer: string; readonly pending: number }[];
}

const YIELD_EVERY = 64;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** The keys each callback may return, and whether it may emit. */
function rulesFor(kind: StageKind) {
  const emits = kind !== 'consumer';
  const base = ['events', 'state', 'stop'];
  return {
    common: { keys: base, emits } satisfies ResultRules,
    call: { keys: [...base, 'reply'], emits } satisfies ResultRules,
    subscribe: { keys: ['demand', 'state', 'stop'], emits: false } satisfies ResultRules,
  };
}

/**
 * One running stage: a mailbox processed one message at a time, the
 * consumer side (subscriptions upstream, batching, asks) and the producer
 * side (dispatcher, buffer, demand mode). Callbacks may be sync or async;
 * the next message waits until the current callback has returned.
 */
export class Stage implements StagePeer {
  readonly id: number;
  readonly name: string | undefined;
  readonly label: string;
  readonly kind: StageKind;
  status: StageStatus = 'starting';
  exitReason: ExitReason | undefined;

  private state: unknown;
  private readonly mailbox = new Mailbox<MailboxMessage>();
  private pumping = false;
  private readonly rules: ReturnType<typeof rulesFor>;
  readonly ctx: StageContext;

  // consumer side
  private readonly upstream = new Map<number, UpstreamLink>();
  /**
   * producer_consumer: events received and not yet handled, waiting for
   * downstream demand, with the cancels and infos that arrived behind them
   * (GenStage queues those too, so they keep their place).
   */
  private readonly pcQueue: PcQueued[] = [];
  /** producer_consumer: downstream demand not yet met. */
  private pcDemand = 0;

  // producer side
  private readonly downstream = new Map<number, DownstreamLink>();
  private dispatcher: Dispatcher<unknown> | undefined;
  private buffer: EventBuffer<unknown> | undefined;
  private demandMode: 'forward' | 'accumulate' = PRODUCER_DEFAULTS.demand;
  /** A producer accumulating: demand and emitted events held back, in order, until it forwards again. */
  private readonly accumulated: Accumulated[] = [];
  /** Events dropped from the buffer or the dispatcher's queues. */
  private dropped = 0;

  /** Set when a producer_consumer's producers finished cleanly: it exits once it has handed on what it holds. */
  private exitWhenDrained: ExitReason | undefined;
  private readonly timers = new Set<TimerHandle>();
  /** Calls handed to handleCall and not answered yet. */
  private readonly openCalls = new Set<number>();
  private readonly exitListeners: ((reason: ExitReason) => void)[] = [];
  private eventsIn = 0;
  private lastEventAtMs: number | undefined;
  private eventsOut = 0;
  private batchesIn = 0;

  constructor(
    private readonly system: StageSystem,
    readonly spec: AnyStageSpec,
    id: number,
    name: string | undefined,
  ) {
    this.id = id;
    this.name = name;
    this.kind = spec.kind;
    this.label = name ?? `${spec.kind}#${id}`;
    this.rules = rulesFor(spec.kind);
    this.ctx = this.makeContext();
  }

  get isProducer(): boolean {
    return this.kind !== 'consumer';
  }

  get isConsumer(): boolean {
    return this.kind !== 'producer';
  }

  get alive(): boolean {
    return this.status !== 'exited';
  }

  /** Calls `listener` once when the stage exits (immediately if it already has). */
  onExit(listener: (reason: ExitReason) => void): void {
    if (this.status === 'exited') listener(this.exitReason as ExitReason);
    else this.exitListeners.push(listener);
  }

  // ---------------------------------------------------------------- lifecycle

  /** Runs init and the initial subscriptions. Rejects if either fails; the stage is then exited. */
  async init(args: unknown): Promise<void> {
    let result: unknown;
    try {
      result = this.spec.init(args, this.ctx);
      if (isThenable(result)) result = await result;
    } catch (error) {
      if (this.alive) this.finish(this.callbackError('init', error));
      throw this.exitReason;
    }
    // Killed while init ran.
    if (!this.alive) throw this.exitReason;
    try {
      const subscribeTo = this.applyInit(result);
      for (const entry of subscribeTo) {
        const options: SubscribeOptions = typeof entry === 'string' || isStageRef(entry) ? { to: entry } : entry;
        await this.subscribeUpstream(options);
        if (!this.alive) throw this.exitReason;
      }
      this.status = 'running';
    } catch (error) {
      if (this.alive) await this.exit(error as ExitReason);
      throw this.exitReason;
    }
    this.wake();
  }

  private applyInit(result: unknown): readonly (StageAddress | SubscribeOptions)[] {
    const where = `stage ${this.label}: init`;
    if (typeof result !== 'object' || result === null || Array.isArray(result) || !('state' in result)) {
      throw new FabricError('SF_BAD_RETURN', `${where} returned ${describeValue(result)}; expected an object with \`state\``, {
        stage: this.label,
      });
    }
    const init = result as Record<string, unknown>;
    const allowed = ['state'];
    if (this.isProducer) allowed.push('dispatcher', 'bufferSize', 'bufferKeep');
    // Only a producer accumulates demand, as in GenStage: a producer_consumer's demand is its consumers'.
    if (this.kind === 'producer') allowed.push('demand');
    if (this.isConsumer) allowed.push('subscribeTo');
    for (const key of Object.keys(init)) {
      if (!allowed.includes(key)) {
        throw new FabricError(
          'SF_BAD_RETURN',
          `${where} returned an unknown key \`${key}\` for a ${this.kind}; allowed: ${allowed.join(', ')}`,
          { stage: this.label },
        );
      }
    }
    this.state = init.state;
    if (this.isProducer) {
      const bufferSize = checkBufferSize(where, init.bufferSize ?? PRODUCER_DEFAULTS.bufferSize);
      const keep = checkOneOf(where, 'bufferKeep', init.bufferKeep ?? PRODUCER_DEFAULTS.bufferKeep, ['first', 'last'] as const);
      this.demandMode = checkOneOf(where, 'demand', init.demand ?? PRODUCER_DEFAULTS.demand, ['forward', 'accumulate'] as const);
      this.buffer = new EventBuffer(bufferSize, keep);
      this.dispatcher = createDispatcher(where, init.dispatcher, bufferSize, keep, this.dispatcherHost);
    }
    const subscribeTo = init.subscribeTo ?? [];
    if (!Array.isArray(subscribeTo)) {
      throw new FabricError('SF_BAD_OPTION', `${where}: option subscribeTo = ${describeValue(subscribeTo)}: must be an array`, {
        stage: this.label,
      });
    }
    return subscribeTo;
  }

  deliver(message: MailboxMessage): void {
    if (this.status === 'exited') {
      this.bounce(message);
      return;
    }
    this.mailbox.push(message);
    if (this.status === 'running') this.wake();
  }

  private wake(): void {
    if (this.pumping || this.mailbox.length === 0) return;
    this.pumping = true;
    this.system.busy(1);
    this.system.schedule(this.runPump);
  }

  private readonly runPump = (): void => void this.pump();

  private async pump(): Promise<void> {
    let handled = 0;
    try {
      while (this.status === 'running') {
        const message = this.mailbox.shift();
        if (message === undefined) break;
        try {
          const pending = this.handle(message);
          if (pending !== undefined) await pending;
        } catch (error) {
          await this.exit(error as ExitReason);
        }
        if (this.exitWhenDrained !== undefined && this.drained()) await this.exit(this.exitWhenDrained);
        if (++handled % YIELD_EVERY === 0) await yieldToEventLoop();
      }
    } finally {
      this.pumping = false;
      this.system.busy(-1);
    }
    if (this.status === 'running' && this.mailbox.length > 0) this.wake();
  }

  /** Answers a message that reached a stage that has exited, as a dead process would. */
  private bounce(message: MailboxMessage): void {
    if (message.t === 'subscribe') {
      message.consumer.deliver({ t: 'cancel-down', id: message.subscription.id, info: { kind: 'down', reason: 'noproc' } });
    } else if (message.t === 'call') {
      this.system.settleCall(
        message.from,
        undefined,
        new FabricError('SF_NO_STAGE', `stage ${this.label} has exited`, { stage: this.label }),
      );
    } else if (message.t === 'subscribe-to' || message.t === 'info-after-events') {
      message.done?.(new FabricError('SF_NO_STAGE', `stage ${this.label} has exited`, { stage: this.label }));
    }
  }

  private handle(message: MailboxMessage): Promise<void> | undefined {
    switch (message.t) {
      case 'ask':
        return this.onAsk(message.id, message.count);
      case 'reask':
        return this.onReask(message.id, message.count);
      case 'events':
        return this.onEvents(message.id, message.events);
      case 'handled':
        return undefined;
      case 'subscribe':
        return this.onSubscribe(message.subscription, message.consumer, message.options);
      case 'cancel-up':
        return this.onCancelFromConsumer(message.id, message.info);
      case 'cancel-down':
        return this.onCancelFromProducer(message.id, message.info);
      case 'call':
        return this.onCall(message.message, message.from);
      case 'cast':
        return this.runCallback('handleCast', this.spec.handleCast, [message.message], this.rules.common);
      case 'info':
        return this.runCallback('handleInfo', this.spec.handleInfo, [message.message], this.rules.common);
      case 'info-after-events':
        this.infoAfterEvents(message.message);
        message.done?.();
        return undefined;
      case 'subscribe-to':
        return this.subscribeUpstream(message.options).then(
          (subscription) => message.done?.(this.alive ? undefined : this.exitReason, subscription),
          (error: unknown) => message.done?.(error),
        );
      case 'cancel-sub':
        this.cancelSubscription(message.id, message.reason);
        return undefined;
      case 'ask-sub':
        this.askUpstream(message.id, message.count);
        return undefined;
      case 'demand-mode':
        return this.setDemandMode(message.mode);
      case 'stop':
        return this.exit(message.reason);
    }
  }

  /** Stops the stage: terminate, cancel every subscription as `down`, settle waiting callers. */
  async exit(reason: ExitReason): Promise<void> {
    if (this.status === 'exited') return;
    const terminate = this.spec.terminate;
    this.status = 'exited';
    this.exitReason = reason;
    if (terminate !== undefined) {
      try {
        const r = terminate.call(this.spec, reason, this.state);
        if (isThenable(r)) await r;
      } catch (error) {
        this.system.report({ type: 'callback-error', stage: this.label, callback: 'terminate', error });
      }
    }
    this.finish(reason);
  }

  /**
   * Exits at once with reason 'killed', as Process.exit(pid, :kill): the
   * mailbox is not processed (what waits there is answered as a dead stage
   * would) and terminate is not called. Subscribers on both sides get `down`.
   */
  kill(): void {
    if (this.status === 'exited') return;
    this.finish('killed');
  }

  private finish(reason: ExitReason): void {
    this.status = 'exited';
    this.exitReason = reason;
    for (const timer of this.timers) this.system.clock.clearTimeout(timer);
    this.timers.clear();
    const info: CancelInfo = { kind: 'down', reason };
    for (const link of this.downstream.values()) link.consumer.deliver({ t: 'cancel-down', id: link.subscription.id, info });
    for (const link of this.upstream.values()) link.producer.deliver({ t: 'cancel-up', id: link.subscription.id, info });
    this.downstream.clear();
    this.upstream.clear();
    this.pcQueue.length = 0;
    for (const message of this.mailbox.clear()) this.bounce(message);
    // Calls this stage took and never answered fail now rather than at their timeout, as a GenServer caller exits.
    for (const callId of this.openCalls) {
      this.system.settleCall(
        { callId },
        undefined,
        new FabricError('SF_STAGE_EXITED', `stage ${this.label} exited before replying: ${describeValue(reason)}`, {
          stage: this.label,
          cause: reason,
        }),
      );
    }
    this.openCalls.clear();
    this.system.stageExited(this, reason);
    for (const listener of this.exitListeners.splice(0)) listener(reason);
  }

  private callbackError(callback: string, error: unknown): ExitReason {
    if (error instanceof FabricError) return error;
    const message = error instanceof Error ? error.message : describeValue(error);
    return new FabricError('SF_CALLBACK_THREW', `stage ${this.label}: ${callback} threw: ${message}`, { stage: this.label, cause: error });
  }

  // ---------------------------------------------------------------- callbacks

  /**
   * Runs a callback and applies its result: new state, events to dispatch,
   * a stop. Sync callbacks stay on the sync path; only a returned promise is awaited.
   */
  private runCallback(
    name: string,
    // biome-ignore lint/suspicious/noExplicitAny: callbacks of every stage kind pass through here
    fn: ((...args: any[]) => unknown) | undefined,
    args: unknown[],
    rules: ResultRules,
    onResult?: (result: ReadResult) => void,
  ): Promise<void> | undefined {
    if (fn === undefined) return undefined;
    let value: unknown;
    try {
      value = fn.call(this.spec, ...args, this.state, this.ctx);
    } catch (error) {
      return this.exit(this.callbackError(name, error));
    }
    if (isThenable(value)) {
      return Promise.resolve(value).then(
        (resolved) => this.applyResult(name, resolved, rules, onResult),
        (error: unknown) => this.exit(this.callbackError(name, error)),
      );
    }
    return this.applyResult(name, value, rules, onResult);
  }

  private applyResult(
    name: string,
    value: unknown,
    rules: ResultRules,
    onResult?: (result: ReadResult) => void,
  ): Promise<void> | undefined {
    if (!this.alive) return undefined;
    const result = readResult(this.label, name, value, rules);
    if (result.hasState) this.state = result.state;
    // Events go out before a reply, as GenStage's {:reply, reply, events, state}.
    if (result.events !== undefined && result.events.length > 0) this.dispatchEvents(result.events);
    onResult?.(result);
    if (result.stop !== undefined) return this.exit(result.stop);
    return undefined;
  }

  /** Answers a call and forgets it. */
  private readonly reply = (from: CallFrom, value: unknown): void => {
    this.openCalls.delete(from.callId);
    this.system.settleCall(from, value);
  };

  private onCall(message: unknown, from: CallFrom): Promise<void> | undefined {
    if (this.spec.handleCall === undefined) {
      this.system.settleCall(
        from,
        undefined,
        new FabricError('SF_BAD_RETURN', `stage ${this.label} has no handleCall for ${describeValue(message)}`, { stage: this.label }),
      );
      return undefined;
    }
    this.openCalls.add(from.callId);
    return this.runCallback('handleCall', this.spec.handleCall, [message, from], this.rules.call, (result) => {
      if (result.hasReply) this.reply(from, result.reply);
    });
  }

  // ---------------------------------------------------------------- consumer side

  /** Subscribes this consumer to a producer (GenStage's consumer_subscribe). */
  private async subscribeUpstream(options: SubscribeOptions): Promise<Subscription | undefined> {
    const where = `stage ${this.label}: subscribe`;
    if (!this.isConsumer) {
      throw new FabricError('SF_NOT_CONSUMER', `${where}: a producer cannot subscribe to another stage`, { stage: this.label });
    }
    const resolved = resolveSubscription(where, options);
    const producer = this.system.lookup(options.to);
    if (producer === undefined || !producer.alive) {
      const reason = 'noproc';
      if (resolved.cancel === 'temporary') {
        throw new FabricError('SF_NO_STAGE', `${where}: no stage ${describeAddress(options.to)} to subscribe to`, { stage: this.label });
      }
      await this.exit(
        new FabricError('SF_NO_STAGE', `${where}: no stage ${describeAddress(options.to)} (${reason})`, { stage: this.label }),
      );
      return undefined;
    }
    const subscription: Subscription = { id: this.system.nextSubscriptionId(), producer, consumer: this };
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
    producer.deliver({ t: 'subscribe', subscription, consumer: this, options });
    try {
      const pending = this.runCallback(
        'handleSubscribe',
        this.spec.handleSubscribe,
        ['producer', options, subscription],
        this.rules.subscribe,
        (r) => {
          if (r.demand !== undefined) {
            link.manual =
              checkOneOf(`stage ${this.label}: handleSubscribe`, 'demand', r.demand, ['automatic', 'manual'] as const) === 'manual';
          }
        },
      );
      if (pending !== undefined) await pending;
    } catch (error) {
      // A bad return from handleSubscribe stops the consumer, as GenStage's bad_return_value; the caller sees why.
      await this.exit(error as ExitReason);
      return subscription;
    }
    if (!this.alive || link.manual || this.upstream.get(subscription.id) !== link) return subscription;
    link.pending += resolved.maxDemand;
    producer.deliver({ t: 'ask', id: subscription.id, count: resolved.maxDemand });
    return subscription;
  }

  private askUpstream(id: number, count: number): void {
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 0) {
      throw new FabricError(
        'SF_BAD_ASK',
        `stage ${this.label}: ask(${describeValue(count)}) on subscription ${id}: demand must be a non-negative integer`,
        {
          stage: this.label,
        },
      );
    }
    const link = this.upstream.get(id);
    if (link === undefined || count === 0) return;
    link.pending += count;
    link.producer.deliver({ t: 'ask', id, count });
  }

  private onEvents(id: number, events: unknown[]): Promise<void> | undefined {
    const link = this.upstream.get(id);
    if (link === undefined) return undefined; // cancelled meanwhile: GenStage drops these too
    this.eventsIn += events.length;
    this.lastEventAtMs = this.system.clock.now();
    if (this.kind === 'producer_consumer') {
      this.pcQueue.push({ kind: 'events', link, events });
      return this.drainPcQueue();
    }
    return this.receive(link, events);
  }

  /**
   * GenStage's split_batches: events reach handleEvents in batches of at most
   * maxDemand - minDemand, and after each batch the consumer asks again for
   * what brings its outstanding demand back to maxDemand once it has fallen
   * to minDemand or below.
   */
  private receive(link: UpstreamLink, events: unknown[]): Promise<void> | undefined {
    if (events.length > link.pending) {
      this.system.report({
        type: 'excess-events',
        stage: this.label,
        subscription: link.subscription.id,
        excess: events.length - link.pending,
      });
    }
    if (link.manual) {
      link.pending = Math.max(0, link.pending - events.length);
      return this.handleBatch(link, events, 0);
    }
    const size = link.maxDemand - link.minDemand;
    if (events.length <= size) {
      // The common case: one batch, no copy.
      const askAfter = this.account(link, events.length);
      return this.handleBatch(link, events, askAfter);
    }
    return this.receiveBatches(link, events, size);
  }

  private async receiveBatches(link: UpstreamLink, events: unknown[], size: number): Promise<void> {
    for (let offset = 0; offset < events.length && this.alive; offset += size) {
      const batch = events.slice(offset, offset + size);
      const pending = this.handleBatch(link, batch, this.account(link, batch.length));
      if (pending !== undefined) await pending;
    }
  }

  /** Lowers outstanding demand by a batch; returns how much to ask for after handling it. */
  private account(link: UpstreamLink, batchSize: number): number {
    const left = Math.max(0, link.pending - batchSize);
    if (left <= link.minDemand) {
      link.pending = link.maxDemand;
      return link.maxDemand - left;
    }
    link.pending = left;
    return 0;
  }

  private handleBatch(link: UpstreamLink, batch: unknown[], askAfter: number): Promise<void> | undefined {
    this.batchesIn++;
    const spec = this.spec as { handleEvents: (...args: unknown[]) => unknown };
    const observer = this.system.observer;
    const started = observer === undefined ? 0 : performance.now();
    const ask = () => {
      observer?.batchHandled(this.label, batch.length, (performance.now() - started) / 1000);
      // A stage whose work outlives handleEvents reports itself, with ctx.handled, when it is done.
      if (link.producer.wantsHandled && this.spec.reportsHandled !== true)
        link.producer.deliver({ t: 'handled', id: link.subscription.id, count: batch.length });
      if (askAfter > 0 && this.alive && this.upstream.get(link.subscription.id) === link) {
        link.producer.deliver({ t: 'ask', id: link.subscription.id, count: askAfter });
      }
    };
    const pending = this.runCallback('handleEvents', spec.handleEvents, [batch, link.subscription], this.rules.common);
    if (pending === undefined) {
      ask();
      return undefined;
    }
    return pending.then(ask);
  }

  /** producer_consumer: handles queued input while downstream has demand. */
  private async drainPcQueue(): Promise<void> {
    while (this.pcDemand > 0 && this.alive) {
      const item = this.pcQueue.shift();
      if (item === undefined) return;
      let pending: Promise<void> | undefined;
      if (item.kind === 'events') pending = this.receive(item.link, item.events);
      else if (item.kind === 'cancel') pending = this.invokeCancel(item.link, item.info);
      else this.bufferOrDispatchInfo(item.message);
      if (pending !== undefined) await pending;
    }
  }

  private onCancelFromProducer(id: number, info: CancelInfo): Promise<void> | undefined {
    const link = this.upstream.get(id);
    if (link === undefined) return undefined;
    this.upstream.delete(id);
    // Events received before the cancel are handled before it, as GenStage's schedule_cancel.
    if (this.kind === 'producer_consumer' && this.pcQueue.length > 0) {
      this.pcQueue.push({ kind: 'cancel', link, info });
      return undefined;
    }
    return this.invokeCancel(link, info);
  }

  /** handleCancel for a subscription upstream, then what its cancel mode asks. */
  private invokeCancel(link: UpstreamLink, info: CancelInfo): Promise<void> | undefined {
    const pending = this.runCallback('handleCancel', this.spec.handleCancel, [info, link.subscription], this.rules.common);
    const follow = () => {
      if (!this.alive) return undefined;
      // Refused as a duplicate: the first subscription still runs, so the cancel mode does not apply (as GenStage).
      if (isFabricError(info.reason, 'SF_ALREADY_SUBSCRIBED')) return undefined;
      const exits = link.cancel === 'permanent' || (link.cancel === 'transient' && !isCleanExit(info.reason));
      if (!exits) return undefined;
      if (isCleanExit(info.reason) && link.group !== undefined) {
        // Another producer of its group still feeds this stage: follow them out with the last.
        for (const other of this.upstream.values()) if (other.group === link.group) return undefined;
      }
      if (isCleanExit(info.reason) && !this.drained()) {
        // Its producer finished: hand on what is queued and buffered first, then exit.
        this.exitWhenDrained = info.reason as ExitReason;
        return undefined;
      }
      return this.exit(info.reason as ExitReason);
    };
    return pending === undefined ? follow() : pending.then(follow);
  }

  /** Cancels a subscription from whichever side this stage holds it. */
  private cancelSubscription(id: number, reason: unknown): void {
    const up = this.upstream.get(id);
    if (up !== undefined) {
      // The producer confirms with a cancel of its own; handleCancel and the cancel mode run then, as in GenStage.
      up.producer.deliver({ t: 'cancel-up', id, info: { kind: 'cancel', reason } });
      return;
    }
    const down = this.downstream.get(id);
    if (down !== undefined) {
      this.deliver({ t: 'cancel-up', id, info: { kind: 'cancel', reason } });
    }
  }

  // ---------------------------------------------------------------- producer side

  private onSubscribe(subscription: Subscription, consumer: StagePeer, options: SubscribeOptions): Promise<void> | undefined {
    if (!this.isProducer) {
      consumer.deliver({
        t: 'cancel-down',
        id: subscription.id,
        info: { kind: 'cancel', reason: `stage ${this.label} is a consumer, not a producer` },
      });
      return undefined;
    }
    const link: DownstreamLink = { subscription, consumer, asked: 0, sent: 0 };
    // Known before handleSubscribe runs, so the callback may already cancel it.
    this.downstream.set(subscription.id, link);
    const admit = () => {
      if (!this.alive) return undefined;
      try {
        const forward = (this.dispatcher as Dispatcher<unknown>).subscribe(subscription.id, options, consumer);
        if (forward > 0) return this.serveDemand(forward);
      } catch (error) {
        this.downstream.delete(subscription.id);
        consumer.deliver({ t: 'cancel-down', id: subscription.id, info: { kind: 'cancel', reason: error } });
      }
      return undefined;
    };
    const pending = this.runCallback(
      'handleSubscribe',
      this.spec.handleSubscribe,
      ['consumer', options, subscription],
      this.rules.subscribe,
      (r) => {
        // Only the consumer side of a subscription may take its demand in hand, as in GenStage.
        if (r.demand !== undefined && r.demand !== 'automatic') {
          throw new FabricError(
            'SF_BAD_RETURN',
            `stage ${this.label}: handleSubscribe('consumer') returned demand ${describeValue(r.demand)}; a producer's side is always 'automatic'`,
            { stage: this.label },
          );
        }
      },
    );
    return pending === undefined ? admit() : pending.then(admit);
  }

  private onAsk(id: number, count: number): Promise<void> | undefined {
    const link = this.downstream.get(id);
    if (link === undefined) return undefined;
    link.asked += count;
    return this.serveDemand((this.dispatcher as Dispatcher<unknown>).ask(id, count));
  }

  /** Demand the dispatcher gave back to a subscription: like an ask, but the consumer did not ask it again. */
  private onReask(id: number, count: number): Promise<void> | undefined {
    if (!this.downstream.has(id)) return undefined;
    return this.serveDemand((this.dispatcher as Dispatcher<unknown>).ask(id, count));
  }

  /**
   * Demand the dispatcher forwarded (GenStage's handle_dispatcher_result):
   * met from the buffer first, the rest by handleDemand, or held back while
   * accumulating. A producer_consumer adds it to what its consumers want and
   * handles the input it holds.
   */
  private serveDemand(counter: number): Promise<void> | undefined {
    if (this.kind === 'producer_consumer') {
      this.pcDemand += counter;
      this.takeFromBuffer(this.pcDemand);
      return this.pcQueue.length > 0 ? this.drainPcQueue() : undefined;
    }
    const left = this.takeFromBuffer(counter);
    if (left <= 0) return undefined;
    if (this.demandMode === 'accumulate') {
      this.accumulated.push({ demand: left });
      return undefined;
    }
    return this.runCallback('handleDemand', (this.spec as ProducerSpec).handleDemand, [left], this.rules.common);
  }

  /**
   * GenStage's take_from_buffer: dispatches up to `counter` buffered events,
   * handing out the infos queued among them as they are reached. Returns
   * what is left of `counter`.
   */
  private takeFromBuffer(counter: number): number {
    const buffer = this.buffer as EventBuffer<unknown>;
    while (counter > 0 && buffer.length > 0) {
      const events = buffer.take(counter);
      counter -= events.length;
      if (events.length > 0) this.dispatchEvents(events, true);
      const infos = buffer.takeMarker();
      if (infos !== undefined) {
        for (const message of infos) (this.dispatcher as Dispatcher<unknown>).info(message);
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
    reask: (id, count) => this.deliver({ t: 'reask', id, count }),
    info: (message) => this.deliver({ t: 'info', message }),
    overflow: (partition, dropped, capacity) => this.reportDropped(dropped, capacity, partition),
  };

  /**
   * GenStage's dispatch_events: the dispatcher places what the demand it
   * forwarded allows, the rest goes to the buffer. A producer accumulating
   * holds the events back instead, to dispatch them in order when it forwards.
   */
  private dispatchEvents(events: unknown[], fromBuffer = false): void {
    if (this.kind === 'producer' && this.demandMode === 'accumulate') {
      this.accumulated.push({ events });
      return;
    }
    const left = (this.dispatcher as Dispatcher<unknown>).dispatch(events);
    if (this.kind === 'producer_consumer') this.pcDemand = Math.max(0, this.pcDemand - (events.length - left.length));
    if (left.length === 0) return;
    // Taken from the buffer and not placed: back to the front, so the buffer keeps its order.
    if (fromBuffer) (this.buffer as EventBuffer<unknown>).unshift(left);
    else this.bufferEvents(left);
  }

  /** GenStage's buffer_events: keeps by bufferSize and bufferKeep, reports what is dropped. */
  private bufferEvents(events: readonly unknown[]): void {
    const buffer = this.buffer as EventBuffer<unknown>;
    const dropped = buffer.push(events, this.releaseInfo);
    if (dropped > 0) this.reportDropped(dropped, buffer.capacity);
  }

  /** An info whose events were dropped from the buffer still reaches the dispatcher, and so handleInfo. */
  private readonly releaseInfo = (message: unknown): void => (this.dispatcher as Dispatcher<unknown>).info(message);

  private reportDropped(dropped: number, capacity: number, partition?: string | number): void {
    this.dropped += dropped;
    const keep = (this.buffer as EventBuffer<unknown>).keep;
    this.system.report(
      partition === undefined
        ? { type: 'buffer-overflow', stage: this.label, dropped, bufferSize: capacity, keep }
        : { type: 'buffer-overflow', stage: this.label, dropped, bufferSize: capacity, keep, partition },
    );
  }

  /** GenStage's sync_info/async_info: handleInfo after the events this stage emitted or received so far. */
  private infoAfterEvents(message: unknown): void {
    if (this.kind === 'consumer') this.deliver({ t: 'info', message });
    else if (this.kind === 'producer_consumer' && this.pcQueue.length > 0) this.pcQueue.push({ kind: 'info', message });
    else this.bufferOrDispatchInfo(message);
  }

  private bufferOrDispatchInfo(message: unknown): void {
    if (!(this.buffer as EventBuffer<unknown>).pushMarker(message)) (this.dispatcher as Dispatcher<unknown>).info(message);
  }

  private onCancelFromConsumer(id: number, info: CancelInfo): Promise<void> | undefined {
    const link = this.downstream.get(id);
    if (link === undefined) {
      return undefined;
    }
    this.downstream.delete(id);
    const forward = (this.dispatcher as Dispatcher<unknown>).cancel(id);
    if (info.kind === 'cancel') link.consumer.deliver({ t: 'cancel-down', id, info });
    const pending = this.runCallback('handleCancel', this.spec.handleCancel, [info, link.subscription], this.rules.common);
    const after = () => (this.alive && forward > 0 ? this.serveDemand(forward) : undefined);
    return pending === undefined ? after() : pending.then(after);
  }

  /** Nothing received is left unhandled and nothing emitted is left undelivered, or nobody is left to take it. */
  private drained(): boolean {
    if (this.kind !== 'producer_consumer' || this.downstream.size === 0) return true;
    return this.pcQueue.length === 0 && (this.buffer?.length ?? 0) === 0 && (this.dispatcher?.held() ?? 0) === 0;
  }

  private setDemandMode(mode: 'forward' | 'accumulate'): Promise<void> | undefined {
    if (!this.isProducer)
      throw new FabricError('SF_NOT_PRODUCER', `stage ${this.label}: only a producer has a demand mode`, { stage: this.label });
    this.demandMode = mode;
    if (mode === 'forward' && this.accumulated.length > 0) return this.replayAccumulated(this.accumulated.splice(0), 0);
    return undefined;
  }

  /** Forwarding again: what accumulated is served and dispatched in the order it came, each demand on its own. */
  private replayAccumulated(entries: readonly Accumulated[], from: number): Promise<void> | undefined {
    for (let i = from; i < entries.length && this.alive; i++) {
      const entry = entries[i] as Accumulated;
      if ('events' in entry) {
        this.dispatchEvents(entry.events);
        continue;
      }
      const pending = this.serveDemand(entry.demand);
      if (pending !== undefined) return pending.then(() => this.replayAccumulated(entries, i + 1));
    }
    return undefined;
  }

  // ---------------------------------------------------------------- context and stats

  private makeContext(): StageContext {
    // Context calls made from inside a callback take effect right after it, in mailbox order.
    return {
      self: this,
      clock: this.system.clock,
      ask: (subscription, count) => {
        if (typeof count !== 'number' || !Number.isInteger(count) || count < 0) {
          throw new FabricError('SF_BAD_ASK', `stage ${this.label}: ask(${describeValue(count)}): demand must be a non-negative integer`, {
            stage: this.label,
          });
        }
        this.askUpstream(subscription.id, count);
      },
      cancel: (subscription, reason = 'normal') => this.cancelSubscription(subscription.id, reason),
      subscribe: (options) =>
        this.deliver({ t: 'subscribe-to', options: typeof options === 'object' && !isStageRef(options) ? options : { to: options } }),
      sendAfter: (ms, message) => {
        const handle = this.system.clock.setTimeout(() => {
          this.timers.delete(handle);
          this.deliver({ t: 'info', message });
        }, ms);
        this.timers.add(handle);
        return handle;
      },
      reply: this.reply,
      handled: (subscription, count) => {
        if (typeof count !== 'number' || !Number.isInteger(count) || count < 0) {
          throw new FabricError(
            'SF_BAD_ASK',
            `stage ${this.label}: handled(${describeValue(count)}): the count of events done must be a non-negative integer`,
            { stage: this.label },
          );
        }
        // The subscription may have ended since the events arrived: its producer still takes the report.
        const producer = this.upstream.get(subscription.id)?.producer ?? subscription.producer;
        if (count > 0 && isStagePeer(producer) && producer.wantsHandled === true)
          producer.deliver({ t: 'handled', id: subscription.id, count });
      },
      setDemandMode: (mode) => this.deliver({ t: 'demand-mode', mode }),
      send: (to, message) => this.system.send(to, message),
    };
  }

  stats(): StageStats {
    return {
      ref: this,
      kind: this.kind,
      status: this.status,
      mailbox: this.mailbox.length,
      bufferLength: (this.buffer?.length ?? 0) + (this.dispatcher?.held() ?? 0),
      bufferCapacity: this.buffer?.capacity ?? 0,
      bufferDropped: this.dropped,
      demandMode: this.isProducer ? this.demandMode : undefined,
      eventsIn: this.eventsIn,
      eventsOut: this.eventsOut,
      batchesIn: this.batchesIn,
      lastEventAtMs: this.lastEventAtMs,
      downstream: [...this.downstream.values()].map((l) => ({
        id: l.subscription.id,
        consumer: l.consumer.label,
        asked: l.asked,
        sent: l.sent,
      })),
      upstream: [...this.upstream.values()].map((l) => ({ id: l.subscription.id, producer: l.producer.label, pending: l.pending })),
    };
  }

  /** Subscriptions this stage holds upstream, for cancel/ask from outside. */
  upstreamSubscriptions(): Subscription[] {
    return [...this.upstream.values()].map((l) => l.subscription);
  }
}

export function isStageRef(value: unknown): value is StageRef {
  return typeof value === 'object' && value !== null && 'id' in value && 'label' in value && typeof (value as StageRef).id === 'number';
}

function describeAddress(address: StageAddress): string {
  return typeof address === 'string' ? `named "${address}"` : address.label;
}
