import type { CallFrom, CancelInfo, ExitReason, StageRef, SubscribeOptions, Subscription } from './types.js';

/*
 * The messages stages exchange, in two parts.
 *
 * The peer protocol (StageMessage, StagePeer): what the two ends of a
 * subscription, a consumer and a producer, say to each other: GenStage's
 * `$gen_producer` / `$gen_consumer` messages. A local stage speaks it, and so
 * does anything that stands in for a stage on another node (the fabric's
 * RemoteProducer and RemoteConsumer carry it over the wire). A peer that keeps
 * the rules below can sit on either end of a subscription.
 *
 * The control messages (ControlMessage): what the stage's own process (the
 * StageSystem, the stage's context, the stage itself) hands a local stage.
 * They never reach a peer and never cross the wire.
 *
 * Rules of the peer protocol, which every peer keeps:
 *
 * - Subscriptions. The consumer opens one with `subscribe`, naming it by an id
 *   it takes from its StageSystem (unique in that system); every other message
 *   about it carries that id. `subscribe` comes before any other message of
 *   its subscription.
 * - Demand. The producer never sends more events on a subscription than the
 *   consumer asked for with `ask`, counted over the subscription's life: the
 *   invariant everything else serves. Asks add up; each is a positive count.
 * - Order. A peer handles what it is delivered in the order it was
 *   delivered, and a proxy keeps the order of each subscription's messages
 *   in each direction: events arrive in the order they were emitted, and
 *   what followed them (a cancel) follows them still.
 * - No re-entry. `deliver` only takes the message in: a local stage queues it
 *   in its mailbox and handles it on its own turn, so a sender never runs the
 *   receiver's callbacks inside its own, and a peer may deliver to the stage
 *   that just delivered to it.
 * - End. `cancel-down` is the producer's last message on a subscription. After
 *   `cancel-up` the consumer may still send asks and `handled` reports until
 *   the producer's answer arrives (or, for `handled`, later still); a peer
 *   drops, without error, every message for a subscription it no longer holds.
 */

/**
 * consumer → producer: opens subscription `subscription.id`. The producer
 * answers nothing when it takes the subscription (asks follow), or ends it
 * with `cancel-down`: kind `cancel` when it refuses (it is not a producer,
 * or its dispatcher refuses the options), kind `down` when it exits, with
 * reason 'noproc' when it had exited already.
 */
export interface SubscribeMessage {
  readonly t: 'subscribe';
  readonly subscription: Subscription;
  /** Where the producer sends events and `cancel-down` for this subscription. */
  readonly consumer: StagePeer;
  /** The consumer's options as it gave them: the producer's handleSubscribe and dispatcher read them (partition, selector). */
  readonly options: SubscribeOptions;
}

/**
 * consumer → producer: `count` more events on subscription `id`, added to
 * what it asked before. The consumer asks maxDemand once subscribed (unless
 * its demand is manual), then after each batch as GenStage's split_batches
 * says (see split-batches.ts), or when its code asks (manual demand).
 */
export interface AskMessage {
  readonly t: 'ask';
  readonly id: number;
  /** A positive integer. */
  readonly count: number;
}

/**
 * producer → consumer: events for subscription `id`, in the order the
 * producer emitted them, never beyond what the consumer asked for. The
 * consumer hands them to handleEvents in batches of at most
 * maxDemand − minDemand.
 */
export interface EventsMessage {
  readonly t: 'events';
  readonly id: number;
  readonly events: unknown[];
}

/**
 * consumer → producer, only to a peer with `wantsHandled`: the next `count`
 * events received on subscription `id`, in the order they arrived, are done.
 * Sent when handleEvents has returned for a batch, or, by a stage with
 * `reportsHandled`, when its code calls `ctx.handled`; so it may come after
 * the subscription ended. A local producer ignores it.
 */
export interface HandledMessage {
  readonly t: 'handled';
  readonly id: number;
  readonly count: number;
}

/**
 * consumer → producer: the consumer ends subscription `id`: kind `cancel`
 * when it cancelled (the producer confirms with a `cancel-down` carrying the
 * same info, then runs handleCancel), kind `down` when it exited (no answer).
 */
export interface CancelUpMessage {
  readonly t: 'cancel-up';
  readonly id: number;
  readonly info: CancelInfo;
}

/**
 * producer → consumer: the producer ended subscription `id`: kind `cancel`
 * when it refused the subscription, cancelled it, or confirms the
 * consumer's cancel; kind `down` when it exited (the exit reason; 'noproc'
 * when it was not running; a proxy says 'noconnection' when the producer's
 * node is lost). The consumer runs handleCancel and follows its cancel mode.
 */
export interface CancelDownMessage {
  readonly t: 'cancel-down';
  readonly id: number;
  readonly info: CancelInfo;
}

/** A message of the peer protocol. */
export type StageMessage = SubscribeMessage | AskMessage | EventsMessage | HandledMessage | CancelUpMessage | CancelDownMessage;

/**
 * One end of a subscription as the other end sees it: a local stage, or a
 * proxy for a stage on another node that carries the messages over the wire.
 */
export interface StagePeer extends StageRef {
  /** False once it has exited: a consumer does not subscribe to a peer that is not alive (its producer is 'noproc'). */
  readonly alive: boolean;
  /**
   * A producer that wants `handled` reports sets this: a proxy that
   * acknowledges its inbox entries only once their events are handled.
   */
  readonly wantsHandled?: boolean;
  /** Takes a message in, to be handled on the peer's own turn. */
  deliver(message: StageMessage): void;
}

export function isStagePeer(ref: StageRef): ref is StagePeer {
  return 'deliver' in ref;
}

/**
 * What a local stage is handed besides the peer protocol, by its own
 * process only: the StageSystem's calls, the stage's context, the stage
 * itself. Never sent to a peer, never on the wire.
 */
export type ControlMessage =
  /** From the producer's dispatcher: demand it gives back to a subscription (a broadcast selector filtered events out). */
  | { readonly t: 'reask'; readonly id: number; readonly count: number }
  /** StageSystem.call: handleCall, whose reply settles the caller. */
  | { readonly t: 'call'; readonly message: unknown; readonly from: CallFrom }
  /** StageSystem.cast: handleCast. */
  | { readonly t: 'cast'; readonly message: unknown }
  /** StageSystem.send, ctx.send, ctx.sendAfter, the dispatcher: handleInfo. */
  | { readonly t: 'info'; readonly message: unknown }
  /** StageSystem.info (GenStage.sync_info/async_info): handleInfo once the events emitted so far are dispatched. */
  | { readonly t: 'info-after-events'; readonly message: unknown; readonly done?: (error?: unknown) => void }
  /** StageSystem.subscribe, ctx.subscribe: this consumer subscribes to a producer. */
  | {
      readonly t: 'subscribe-to';
      readonly options: SubscribeOptions;
      readonly done?: (error: unknown, subscription?: Subscription) => void;
    }
  /** StageSystem.cancel: cancels a subscription this stage holds. */
  | { readonly t: 'cancel-sub'; readonly id: number; readonly reason: unknown }
  /** StageSystem.ask: asks on a subscription this consumer holds (manual demand). */
  | { readonly t: 'ask-sub'; readonly id: number; readonly count: number }
  /** StageSystem.setDemandMode, ctx.setDemandMode (GenStage.demand/2). */
  | { readonly t: 'demand-mode'; readonly mode: 'forward' | 'accumulate' }
  /** StageSystem.stop: exits after the messages before it. */
  | { readonly t: 'stop'; readonly reason: ExitReason };

/** What a local stage's mailbox holds. */
export type MailboxMessage = StageMessage | ControlMessage;
