import type { ReadResult, ResultRules } from './result.js';
import type { MailboxMessage, StagePeer } from './stage-protocol.js';
import type { StageSystem } from './system.js';
import type { ExitReason } from './types.js';

// biome-ignore lint/suspicious/noExplicitAny: callbacks of every stage kind pass through here
export type Callback = (...args: any[]) => unknown;

/** The keys each kind of callback may return, and whether it may emit. */
export interface CallbackRules {
  /** handleEvents, handleDemand, handleCancel, handleInfo, handleCast. */
  readonly common: ResultRules;
  readonly call: ResultRules;
  readonly subscribe: ResultRules;
}

/**
 * The stage as its consumer side and producer side see it: its callbacks,
 * its lifecycle, its mailbox, and itself as a peer to its subscriptions'
 * other ends. The stage owns the state and the context; the sides own their
 * subscriptions. (The Stage class is it: one shape, so the sides' calls on
 * the hot path stay monomorphic.)
 */
export interface StageCore extends StagePeer {
  readonly system: StageSystem;
  readonly rules: CallbackRules;
  /**
   * Runs a callback with the stage's state and context and applies its
   * result (state, events, stop). Returns a promise only when the callback
   * returned one, so sync callbacks stay on the sync path.
   */
  runCallback(
    name: string,
    fn: Callback | undefined,
    args: unknown[],
    rules: ResultRules,
    onResult?: (result: ReadResult) => void,
  ): Promise<void> | undefined;
  exit(reason: ExitReason): Promise<void>;
  /** Exits once nothing received is left to hand on (a producer_consumer whose producers finished), at once if nothing is. */
  exitWhenDrained(reason: ExitReason): Promise<void> | undefined;
  /** Takes a message of the peer protocol or a control message, handled after those in its mailbox. */
  deliver(message: MailboxMessage): void;
  /** producer_consumer: its consumers want events, so the input it holds may go on. */
  inputWanted(): Promise<void> | undefined;
}
