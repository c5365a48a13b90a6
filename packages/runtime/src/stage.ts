import type { TimerHandle } from './clock.js';
import { ConsumerSide } from './consumer-side.js';
import { describeValue, FabricError } from './errors.js';
import { Mailbox } from './mailbox.js';
import { PRODUCER_DEFAULTS } from './options.js';
import { ProducerSide } from './producer-side.js';
import { isThenable, type ReadResult, type ResultRules, readResult } from './result.js';
import type { AnyStageSpec, StageContext } from './spec.js';
import type { Callback, CallbackRules, StageCore } from './stage-core.js';
import { isStagePeer, type MailboxMessage, type SubscribeMessage } from './stage-protocol.js';
import type { StageSystem } from './system.js';
import type { CallFrom, CancelInfo, ExitReason, StageAddress, StageKind, StageRef, SubscribeOptions, Subscription } from './types.js';

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
function rulesFor(kind: StageKind): CallbackRules {
  const emits = kind !== 'consumer';
  const base = ['events', 'state', 'stop'];
  return {
    common: { keys: base, emits },
    call: { keys: [...base, 'reply'], emits },
    subscribe: { keys: ['demand', 'state', 'stop'], emits: false },
  };
}

/**
 * One running stage: a mailbox processed one message at a time, its
 * lifecycle, its callbacks and what their results ask, wired to its
 * consumer side (consumer-side.ts) and producer side (producer-side.ts),
 * which it has by its kind. Callbacks may be sync or async; the next
 * message waits until the current callback has returned.
 */
export class Stage implements StageCore {
  readonly id: number;
  readonly name: string | undefined;
  readonly label: string;
  readonly kind: StageKind;
  status: StageStatus = 'starting';
  exitReason: ExitReason | undefined;

  private state: unknown;
  private readonly mailbox = new Mailbox<MailboxMessage>();
  private pumping = false;
  readonly rules: CallbackRules;
  readonly ctx: StageContext;
  /** Subscriptions to producers: set by init for a consumer and a producer_consumer. */
  private consumer: ConsumerSide | undefined;
  /** Subscribers, dispatcher and buffer: set by init for a producer and a producer_consumer. */
  private producer: ProducerSide | undefined;

  /** Set when a producer_consumer's producers finished cleanly: it exits once it has handed on what it holds. */
  private exitOnceDrained: ExitReason | undefined;
  private readonly timers = new Set<TimerHandle>();
  /** Calls handed to handleCall and not answered yet. */
  private readonly openCalls = new Set<number>();
  private readonly exitListeners: ((reason: ExitReason) => void)[] = [];

  constructor(
    readonly system: StageSystem,
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

  /** Checks what init returned, takes its state and sets up the stage's sides. Returns the producers to subscribe to. */
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
    const spec = this.spec;
    if (spec.kind !== 'consumer') this.producer = new ProducerSide(this, spec, where, init);
    const subscribeTo = init.subscribeTo ?? [];
    if (!Array.isArray(subscribeTo)) {
      throw new FabricError('SF_BAD_OPTION', `${where}: option subscribeTo = ${describeValue(subscribeTo)}: must be an array`, {
        stage: this.label,
      });
    }
    // A producer_consumer's producer side takes what its consumer side handles.
    if (spec.kind !== 'producer') this.consumer = new ConsumerSide(this, spec, this.producer);
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

  private readonly runPump = (): void => this.pump();

  /**
   * Handles the mailbox. Most messages are handled synchronously, so the
   * turn stays a plain loop (no promise per turn); the first callback that
   * returns a promise hands the rest of the turn to `pumpAsync`.
   */
  private pump(): void {
    let handled = 0;
    while (this.status === 'running') {
      const message = this.mailbox.shift();
      if (message === undefined) break;
      let pending: Promise<void> | undefined;
      try {
        pending = this.handle(message);
      } catch (error) {
        pending = this.exit(error as ExitReason);
      }
      if (pending === undefined && this.exitOnceDrained !== undefined && this.drained()) pending = this.exit(this.exitOnceDrained);
      if (pending === undefined && ++handled % YIELD_EVERY === 0) pending = yieldToEventLoop();
      if (pending !== undefined) {
        void this.pumpAsync(pending, handled);
        return;
      }
    }
    this.pumpDone();
  }

  /** The rest of a turn once a callback went async: awaits it, then handles messages as `pump` does. */
  private async pumpAsync(first: Promise<void>, handled: number): Promise<void> {
    try {
      try {
        await first;
      } catch (error) {
        await this.exit(error as ExitReason);
      }
      if (this.exitOnceDrained !== undefined && this.drained()) await this.exit(this.exitOnceDrained);
      while (this.status === 'running') {
        const message = this.mailbox.shift();
        if (message === undefined) break;
        try {
          const pending = this.handle(message);
          if (pending !== undefined) await pending;
        } catch (error) {
          await this.exit(error as ExitReason);
        }
        if (this.exitOnceDrained !== undefined && this.drained()) await this.exit(this.exitOnceDrained);
        if (++handled % YIELD_EVERY === 0) await yieldToEventLoop();
      }
    } finally {
      this.pumpDone();
    }
  }

  private pumpDone(): void {
    this.pumping = false;
    this.system.busy(-1);
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
      // The peer protocol: a subscription's messages go to the side that holds it.
      case 'ask':
        return this.producer?.ask(message.id, message.count);
      case 'events':
        return this.consumer?.onEvents(message.id, message.events);
      case 'handled':
        return undefined;
      case 'subscribe':
        return this.onSubscribe(message);
      case 'cancel-up':
        return this.producer?.onCancel(message.id, message.info);
      case 'cancel-down':
        return this.consumer?.onCancel(message.id, message.info);
      // Control messages.
      case 'reask':
        return this.producer?.reask(message.id, message.count);
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
    this.producer?.exited(info);
    this.consumer?.exited(info);
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

  /** Nothing received is left unhandled and nothing emitted is left undelivered, or nobody is left to take it. */
  private drained(): boolean {
    const producer = this.producer;
    const consumer = this.consumer;
    // Only a producer_consumer holds input for others.
    if (producer === undefined || consumer === undefined || producer.downstream.size === 0) return true;
    return consumer.holding === 0 && producer.holding === 0;
  }

  /** Exits once nothing received is left to hand on (a producer_consumer whose producers finished), at once if nothing is. */
  exitWhenDrained(reason: ExitReason): Promise<void> | undefined {
    if (this.drained()) return this.exit(reason);
    this.exitOnceDrained = reason;
    return undefined;
  }

  /** producer_consumer: its consumers want events, so the input it holds may go on. */
  inputWanted(): Promise<void> | undefined {
    return this.consumer?.inputWanted();
  }

  // ---------------------------------------------------------------- callbacks

  /**
   * Runs a callback and applies its result: new state, events to dispatch,
   * a stop. Sync callbacks stay on the sync path; only a returned promise is awaited.
   */
  runCallback(
    name: string,
    fn: Callback | undefined,
    args: unknown[],
    rules: ResultRules,
    onResult?: (result: ReadResult) => void,
  ): Promise<void> | undefined {
    if (fn === undefined) return undefined;
    let value: unknown;
    try {
      // The common arities without a spread: this runs once per batch.
      if (args.length === 1) value = fn.call(this.spec, args[0], this.state, this.ctx);
      else if (args.length === 2) value = fn.call(this.spec, args[0], args[1], this.state, this.ctx);
      else value = fn.call(this.spec, ...args, this.state, this.ctx);
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
    // Events go out before a reply, as GenStage's {:reply, reply, events, state}. Only a producing stage's rules let events through.
    if (result.events !== undefined && result.events.length > 0) this.producer?.emit(result.events);
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

  // ---------------------------------------------------------------- wiring the sides

  /** Subscribes this consumer to a producer (GenStage's consumer_subscribe). */
  private subscribeUpstream(options: SubscribeOptions): Promise<Subscription | undefined> {
    if (this.consumer === undefined) {
      const where = `stage ${this.label}: subscribe`;
      return Promise.reject(
        new FabricError('SF_NOT_CONSUMER', `${where}: a producer cannot subscribe to another stage`, { stage: this.label }),
      );
    }
    return this.consumer.subscribe(options);
  }

  /** A consumer subscribes to this stage; refused unless it produces. */
  private onSubscribe({ subscription, consumer, options }: SubscribeMessage): Promise<void> | undefined {
    if (this.producer === undefined) {
      consumer.deliver({
        t: 'cancel-down',
        id: subscription.id,
        info: { kind: 'cancel', reason: `stage ${this.label} is a consumer, not a producer` },
      });
      return undefined;
    }
    return this.producer.subscribe(subscription, consumer, options);
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
    this.consumer?.ask(id, count);
  }

  /** Cancels a subscription from whichever side this stage holds it. */
  private cancelSubscription(id: number, reason: unknown): void {
    if (this.consumer?.cancel(id, reason) === true) return;
    this.producer?.cancel(id, reason);
  }

  /** GenStage's sync_info/async_info: handleInfo after the events this stage emitted or received so far. */
  private infoAfterEvents(message: unknown): void {
    if (this.producer === undefined) this.deliver({ t: 'info', message });
    else if (this.consumer?.holdInfo(message) !== true) this.producer.info(message);
  }

  private setDemandMode(mode: 'forward' | 'accumulate'): Promise<void> | undefined {
    if (this.producer === undefined)
      throw new FabricError('SF_NOT_PRODUCER', `stage ${this.label}: only a producer has a demand mode`, { stage: this.label });
    return this.producer.setDemandMode(mode);
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
        const producer = this.consumer?.upstream.get(subscription.id)?.producer ?? subscription.producer;
        if (count > 0 && isStagePeer(producer) && producer.wantsHandled === true)
          producer.deliver({ t: 'handled', id: subscription.id, count });
      },
      setDemandMode: (mode) => this.deliver({ t: 'demand-mode', mode }),
      send: (to, message) => this.system.send(to, message),
    };
  }

  stats(): StageStats {
    const producer = this.producer;
    const consumer = this.consumer;
    return {
      ref: this,
      kind: this.kind,
      status: this.status,
      mailbox: this.mailbox.length,
      bufferLength: producer?.holding ?? 0,
      bufferCapacity: producer?.buffer.capacity ?? 0,
      bufferDropped: producer?.dropped ?? 0,
      // Before init has run, a producer reports the default.
      demandMode: this.isProducer ? (producer?.demandMode ?? PRODUCER_DEFAULTS.demand) : undefined,
      eventsIn: consumer?.eventsIn ?? 0,
      eventsOut: producer?.eventsOut ?? 0,
      batchesIn: consumer?.batchesIn ?? 0,
      lastEventAtMs: consumer?.lastEventAtMs,
      downstream: producer?.stats() ?? [],
      upstream: consumer?.stats() ?? [],
    };
  }

  /** Subscriptions this stage holds upstream, for cancel/ask from outside. */
  upstreamSubscriptions(): Subscription[] {
    return this.consumer?.subscriptions() ?? [];
  }
}

export function isStageRef(value: unknown): value is StageRef {
  return typeof value === 'object' && value !== null && 'id' in value && 'label' in value && typeof (value as StageRef).id === 'number';
}
