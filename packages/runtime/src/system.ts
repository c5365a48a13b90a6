import { EventEmitter } from 'node:events';
import { type Clock, systemClock, type TimerHandle } from './clock.js';
import { describeValue, FabricError } from './errors.js';
import type { AnyStageSpec } from './spec.js';
import { isStageRef, Stage, type StageStats } from './stage.js';
import { isStagePeer, type StagePeer } from './stage-protocol.js';
import type { CallFrom, ExitReason, StageAddress, StageRef, SubscribeOptions, Subscription } from './types.js';
import { isCleanExit } from './types.js';

/** Things that happen in the background, that nobody awaits, reported as typed events. */
export type SystemEvent =
  | { readonly type: 'stage-exit'; readonly stage: string; readonly reason: ExitReason; readonly clean: boolean }
  | {
      readonly type: 'buffer-overflow';
      readonly stage: string;
      readonly dropped: number;
      /** The cap that was reached: the producer's bufferSize, or maxHeldPerPartition for a partition's queue. */
      readonly bufferSize: number;
      readonly keep: string;
      /** Set when the events were dropped from this partition's queue rather than the producer's buffer. */
      readonly partition?: string | number;
    }
  | { readonly type: 'excess-events'; readonly stage: string; readonly subscription: number; readonly excess: number }
  | { readonly type: 'callback-error'; readonly stage: string; readonly callback: string; readonly error: unknown };

export interface StageSystemEvents {
  event: [SystemEvent];
}

export interface StageSystemOptions {
  readonly clock?: Clock;
  /** Default timeout of `call`, in milliseconds. */
  readonly callTimeoutMs?: number;
  /** Finds a stage by name when none of that name runs here: the node agent answers with a proxy for a remote one. */
  readonly resolve?: (name: string) => StagePeer | undefined;
  /** Told of every batch a consumer handles, for metrics. */
  readonly observer?: StageObserver;
}

/** Hooks for metrics; called on the hot path, so they must be cheap. */
export interface StageObserver {
  batchHandled(stage: string, events: number, seconds: number): void;
}

export interface StartOptions {
  /** Registers the stage under this name, unique in the system. */
  readonly name?: string;
}

/** Stage turns run back to back as microtasks before the event loop gets a turn. */
const MICROTASK_TURNS = 1024;

interface PendingCall {
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
  readonly timer: TimerHandle;
}

/**
 * Hosts stages in one process: starts them, names them, routes their
 * messages and reports what happens to them. A node agent holds one.
 */
export class StageSystem extends EventEmitter<StageSystemEvents> {
  readonly clock: Clock;
  private readonly callTimeoutMs: number;
  private readonly resolveRemote: ((name: string) => StagePeer | undefined) | undefined;
  readonly observer: StageObserver | undefined;
  private readonly names = new Map<string, Stage>();
  private readonly stages = new Map<number, Stage>();
  private nextStageId = 1;
  private nextSubId = 1;
  private nextCallId = 1;
  private readonly calls = new Map<number, PendingCall>();
  private active = 0;
  private idleWaiters: (() => void)[] = [];
  /** Stage turns run as microtasks since the event loop last had a turn. */
  private microtaskTurns = 0;
  private readonly resetTurns = (): void => {
    this.microtaskTurns = 0;
  };

  constructor(options: StageSystemOptions = {}) {
    super();
    this.clock = options.clock ?? systemClock;
    this.callTimeoutMs = options.callTimeoutMs ?? 5000;
    this.resolveRemote = options.resolve;
    this.observer = options.observer;
  }

  /** Starts a stage: runs init and its initial subscriptions. Rejects with init's error. */
  async start<A>(
    spec: AnyStageSpec & { init(args: A, ...rest: never[]): unknown },
    args: A,
    options: StartOptions = {},
  ): Promise<StageRef> {
    const name = options.name;
    if (name !== undefined) {
      const existing = this.names.get(name);
      if (existing?.alive) throw new FabricError('SF_NAME_TAKEN', `a stage named "${name}" is already running`, { stage: name });
    }
    const stage = new Stage(this, spec, this.nextStageId++, name);
    if (name !== undefined) this.names.set(name, stage);
    this.stages.set(stage.id, stage);
    this.busy(1);
    try {
      await stage.init(args);
    } finally {
      this.busy(-1);
    }
    return stage;
  }

  /**
   * Subscribes `consumer` to a producer; resolves with the subscription once
   * it is sent (GenStage.sync_subscribe).
   */
  subscribe(consumer: StageAddress, options: SubscribeOptions): Promise<Subscription> {
    const stage = this.require(consumer);
    return new Promise((resolve, reject) => {
      stage.deliver({
        t: 'subscribe-to',
        options,
        done: (error, subscription) => {
          if (error !== undefined) reject(error);
          else if (subscription === undefined) reject(new FabricError('SF_NO_STAGE', `stage ${stage.label} did not subscribe`));
          else resolve(subscription);
        },
      });
    });
  }

  /** Cancels a subscription from its consumer's side. */
  cancel(subscription: Subscription, reason: unknown = 'normal'): void {
    this.local(subscription.consumer)?.deliver({ t: 'cancel-sub', id: subscription.id, reason });
  }

  /** Asks for more events on a manual subscription, from outside the consumer. */
  ask(subscription: Subscription, count: number): void {
    this.require(subscription.consumer).deliver({ t: 'ask-sub', id: subscription.id, count });
  }

  /** Calls the stage's handleCall and waits for its reply. */
  call<R = unknown>(to: StageAddress, message: unknown, timeoutMs = this.callTimeoutMs): Promise<R> {
    const stage = this.require(to);
    const callId = this.nextCallId++;
    return new Promise<R>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.calls.delete(callId);
        reject(
          new FabricError('SF_CALL_TIMEOUT', `call to stage ${stage.label} got no reply within ${timeoutMs} ms`, {
            stage: stage.label,
            retryable: true,
          }),
        );
      }, timeoutMs);
      this.calls.set(callId, { resolve: resolve as (v: unknown) => void, reject, timer });
      stage.deliver({ t: 'call', message, from: { callId } });
    });
  }

  /** Delivers a message to the stage's handleCast. */
  cast(to: StageAddress, message: unknown): void {
    this.require(to).deliver({ t: 'cast', message });
  }

  /** Delivers a message to the stage's handleInfo; dropped if the stage is not running. */
  send(to: StageAddress, message: unknown): void {
    this.local(to)?.deliver({ t: 'info', message });
  }

  /**
   * Delivers a message to the stage's handleInfo once the events it has
   * emitted so far are on their way (GenStage.sync_info/async_info): a
   * producer queues it behind its buffer, a producer_consumer behind the
   * input it holds, a partition dispatcher behind its partitions' queues.
   * Resolves once it is queued; await it or not.
   */
  info(to: StageAddress, message: unknown): Promise<void> {
    const stage = this.require(to);
    return new Promise((resolve, reject) =>
      stage.deliver({ t: 'info-after-events', message, done: (error) => (error === undefined ? resolve() : reject(error)) }),
    );
  }

  /** Switches a producer's demand mode (GenStage.demand/2). */
  setDemandMode(to: StageAddress, mode: 'forward' | 'accumulate'): void {
    this.require(to).deliver({ t: 'demand-mode', mode });
  }

  /** Stops a stage after the messages already in its mailbox; resolves when it has exited. */
  stop(to: StageAddress, reason: ExitReason = 'normal'): Promise<void> {
    const stage = this.local(to);
    if (stage === undefined || !stage.alive) return Promise.resolve();
    return new Promise((resolve) => {
      stage.onExit(() => resolve());
      stage.deliver({ t: 'stop', reason });
    });
  }

  /**
   * Ends a stage at once with reason 'killed', as Process.exit(pid, :kill):
   * what waits in its mailbox is not handled and terminate is not called.
   * Its subscriptions end as `down` with reason 'killed' on the other side,
   * which then follows its cancel mode; 'killed' is not a clean exit.
   */
  kill(to: StageAddress): void {
    this.local(to)?.kill();
  }

  /** Stops every stage, consumers first so none sees its producer vanish. */
  async shutdown(reason: ExitReason = 'shutdown'): Promise<void> {
    const order = { consumer: 0, producer_consumer: 1, producer: 2 } as const;
    const alive = [...this.stages.values()].filter((s) => s.alive).sort((a, b) => order[a.kind] - order[b.kind]);
    for (const stage of alive) await this.stop(stage, reason);
  }

  whereis(name: string): StageRef | undefined {
    const stage = this.names.get(name);
    return stage?.alive ? stage : undefined;
  }

  /** Calls `listener` when the stage exits (GenServer monitor). */
  monitor(to: StageRef, listener: (reason: ExitReason) => void): void {
    // The stage object itself remembers its exit reason, even once it left the registry.
    const stage = to instanceof Stage ? to : this.stages.get(to.id);
    if (stage === undefined) listener('noproc');
    else stage.onExit(listener);
  }

  stats(to: StageAddress): StageStats {
    return this.require(to).stats();
  }

  /** Every stage the system has started and that is still running. */
  list(): StageRef[] {
    return [...this.stages.values()].filter((s) => s.alive);
  }

  /** Resolves when no stage has work in its mailbox or a callback in progress. */
  idle(): Promise<void> {
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.checkIdle();
    });
  }

  /** The subscriptions a consumer holds, so callers can cancel or ask on them. */
  subscriptionsOf(consumer: StageAddress): Subscription[] {
    return this.require(consumer).upstreamSubscriptions();
  }

  // ------------------------------------------------------------ for stages

  /** The local stage with this name or ref, if it runs here. */
  local(address: StageAddress): Stage | undefined {
    if (typeof address === 'string') return this.names.get(address);
    if (address instanceof Stage) return address;
    if (isStageRef(address)) return this.stages.get(address.id);
    return undefined;
  }

  /** @internal A local stage, or a proxy for a remote one, to subscribe to. */
  lookup(address: StageAddress): StagePeer | undefined {
    const local = this.local(address);
    if (local !== undefined) return local;
    if (typeof address === 'string') return this.resolveRemote?.(address);
    return isStageRef(address) && isStagePeer(address) ? address : undefined;
  }

  private require(address: StageAddress): Stage {
    const stage = this.local(address);
    if (stage === undefined || !stage.alive) {
      throw new FabricError(
        'SF_NO_STAGE',
        `no running stage ${typeof address === 'string' ? `named "${address}"` : describeValue(address.label)}`,
      );
    }
    return stage;
  }

  /** @internal */
  nextSubscriptionId(): number {
    return this.nextSubId++;
  }

  /** @internal */
  settleCall(from: CallFrom, value: unknown, error?: unknown): void {
    const call = this.calls.get(from.callId);
    if (call === undefined) return;
    this.calls.delete(from.callId);
    this.clock.clearTimeout(call.timer);
    if (error === undefined) call.resolve(value);
    else call.reject(error);
  }

  /** @internal */
  report(event: SystemEvent): void {
    this.emit('event', event);
  }

  /** @internal */
  stageExited(stage: Stage, reason: ExitReason): void {
    if (stage.name !== undefined && this.names.get(stage.name) === stage) this.names.delete(stage.name);
    this.stages.delete(stage.id);
    this.report({ type: 'stage-exit', stage: stage.label, reason, clean: isCleanExit(reason) });
  }

  /**
   * @internal Runs a stage's turn soon. Stages hand work to each other as
   * microtasks, which is cheap, but a pipeline that never runs dry would
   * then never let the event loop turn (timers, sockets): after a budget of
   * turns, the next ones wait for the event loop.
   */
  schedule(turn: () => void): void {
    if (this.microtaskTurns++ < MICROTASK_TURNS) {
      queueMicrotask(turn);
      return;
    }
    if (this.microtaskTurns === MICROTASK_TURNS + 1) setImmediate(this.resetTurns);
    setImmediate(turn);
  }

  /** @internal Counts stages with work in hand, for `idle()`. */
  busy(delta: number): void {
    this.active += delta;
    if (this.active === 0) this.checkIdle();
  }

  private checkIdle(): void {
    if (this.active !== 0 || this.idleWaiters.length === 0) return;
    // Let promise chains and immediates already queued settle before calling it idle.
    setImmediate(() => {
      if (this.active !== 0) return;
      const waiters = this.idleWaiters.splice(0);
      for (const resolve of waiters) resolve();
    });
  }
}
