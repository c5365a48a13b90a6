import type { Clock, TimerHandle } from './clock.js';
import type {
  CallbackResult,
  CallFrom,
  CallResult,
  CancelInfo,
  ExitReason,
  InitResult,
  MaybePromise,
  StageAddress,
  StageKind,
  StageRef,
  SubscribeOptions,
  SubscribeResult,
  Subscription,
} from './types.js';

/** What a callback can do besides returning: reach its subscriptions, its timers, its callers. */
export interface StageContext {
  readonly self: StageRef;
  readonly clock: Clock;
  /** Asks a producer for `count` more events on a subscription (manual demand). */
  ask(subscription: Subscription, count: number): void;
  /** Cancels a subscription from either side. */
  cancel(subscription: Subscription, reason?: unknown): void;
  /** Subscribes this consumer to a producer at run time. */
  subscribe(options: SubscribeOptions | StageAddress): void;
  /** Delivers `message` to this stage's handleInfo after `ms`. */
  sendAfter(ms: number, message: unknown): TimerHandle;
  /** Answers a handleCall that returned without `reply`. */
  reply(from: CallFrom, value: unknown): void;
  /** Switches a producer's demand mode: 'accumulate' pauses handleDemand, 'forward' resumes it. */
  setDemandMode(mode: 'forward' | 'accumulate'): void;
  /** Sends a message to any stage's handleInfo. */
  send(to: StageAddress, message: unknown): void;
  /**
   * For a stage with `reportsHandled`: the next `count` events received on
   * this subscription (in the order they arrived) are done. A producer on
   * another node acknowledges their inbox entries only then.
   */
  handled(subscription: Subscription, count: number): void;
}

interface CommonCallbacks<S, Out> {
  handleSubscribe?(
    side: 'producer' | 'consumer',
    options: SubscribeOptions,
    subscription: Subscription,
    state: S,
    ctx: StageContext,
  ): MaybePromise<SubscribeResult<S>>;
  handleCancel?(
    info: CancelInfo,
    subscription: Subscription,
    state: S,
    ctx: StageContext,
  ): MaybePromise<CallbackResult<S, Out> | undefined | void>;
  handleInfo?(message: unknown, state: S, ctx: StageContext): MaybePromise<CallbackResult<S, Out> | undefined | void>;
  handleCall?(message: unknown, from: CallFrom, state: S, ctx: StageContext): MaybePromise<CallResult<S, Out, unknown> | undefined | void>;
  handleCast?(message: unknown, state: S, ctx: StageContext): MaybePromise<CallbackResult<S, Out> | undefined | void>;
  terminate?(reason: ExitReason, state: S): MaybePromise<void>;
  /**
   * The stage's work on events outlives handleEvents (it starts tasks that
   * finish later): it calls `ctx.handled` as they finish, instead of events
   * counting as handled when handleEvents returns. Events received from a
   * producer on another node stay unacknowledged in the inbox until then,
   * so a node killed with work in flight gets that work again when it restarts.
   */
  readonly reportsHandled?: boolean;
}

export interface ProducerSpec<S = unknown, Out = unknown, A = unknown> extends CommonCallbacks<S, Out> {
  readonly kind: 'producer';
  init(args: A, ctx: StageContext): MaybePromise<InitResult<S, 'producer'>>;
  handleDemand(demand: number, state: S, ctx: StageContext): MaybePromise<CallbackResult<S, Out> | undefined | void>;
}

export interface ProducerConsumerSpec<S = unknown, In = unknown, Out = unknown, A = unknown> extends CommonCallbacks<S, Out> {
  readonly kind: 'producer_consumer';
  init(args: A, ctx: StageContext): MaybePromise<InitResult<S, 'producer_consumer'>>;
  handleEvents(events: In[], from: Subscription, state: S, ctx: StageContext): MaybePromise<CallbackResult<S, Out> | undefined | void>;
  handleDemand?(demand: number, state: S, ctx: StageContext): MaybePromise<CallbackResult<S, Out> | undefined | void>;
}

export interface ConsumerSpec<S = unknown, In = unknown, A = unknown> extends CommonCallbacks<S, never> {
  readonly kind: 'consumer';
  init(args: A, ctx: StageContext): MaybePromise<InitResult<S, 'consumer'>>;
  handleEvents(events: In[], from: Subscription, state: S, ctx: StageContext): MaybePromise<CallbackResult<S, never> | undefined | void>;
}

// biome-ignore lint/suspicious/noExplicitAny: a registry of stages holds specs of every state and event type
export type AnyStageSpec = ProducerSpec<any, any, any> | ProducerConsumerSpec<any, any, any, any> | ConsumerSpec<any, any, any>;

/** Defines a producer: it emits events in answer to demand. */
export function producer<S, Out, A = void>(spec: Omit<ProducerSpec<S, Out, A>, 'kind'>): ProducerSpec<S, Out, A> {
  return { ...spec, kind: 'producer' };
}

/** Defines a producer_consumer: it transforms events, under its consumers' demand. */
export function producerConsumer<S, In, Out, A = void>(
  spec: Omit<ProducerConsumerSpec<S, In, Out, A>, 'kind'>,
): ProducerConsumerSpec<S, In, Out, A> {
  return { ...spec, kind: 'producer_consumer' };
}

/** Defines a consumer: it handles events and emits none. */
export function consumer<S, In, A = void>(spec: Omit<ConsumerSpec<S, In, A>, 'kind'>): ConsumerSpec<S, In, A> {
  return { ...spec, kind: 'consumer' };
}

export function isStageKind(value: unknown): value is StageKind {
  return value === 'producer' || value === 'producer_consumer' || value === 'consumer';
}
