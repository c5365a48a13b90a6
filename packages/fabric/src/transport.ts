import type { EventEmitter } from 'node:events';
import type { HeartbeatReading } from './heartbeat.js';
import type { WireMessage } from './wire.js';

/** One entry read from an inbox. Acknowledge it once what it carried has been handled. */
export interface InboundEntry {
  /** The local stage instance whose inbox it came from, `stage@node`. */
  readonly inbox: string;
  readonly entryId: string;
  readonly message: WireMessage;
  /** Size of the entry as it was written, for bounds on what is held. */
  readonly bytes: number;
}

/** Messages and bytes per message type, each way. */
export interface TransportStats {
  readonly sent: Map<string, { messages: number; bytes: number }>;
  readonly received: Map<string, { messages: number; bytes: number }>;
  /** Entries delivered again after a restart (read before, never acknowledged). */
  redeliveries: number;
  deadLetters: number;
  /** Dead letters by kind. */
  readonly deadLettersByKind: Map<DeadLetterKind, number>;
  reconnects: number;
  /** Sends Redis refused (out of memory, a lost connection) that were tried again. */
  sendRetries: number;
  /** Messages given up on after their retries: each ended its subscription. */
  sendFailures: number;
}

export function newTransportStats(): TransportStats {
  return {
    sent: new Map(),
    received: new Map(),
    redeliveries: 0,
    deadLetters: 0,
    deadLettersByKind: new Map(),
    reconnects: 0,
    sendRetries: 0,
    sendFailures: 0,
  };
}

/** Counts a dead letter in `stats`. */
export function countDeadLetter(stats: TransportStats, kind: DeadLetterKind): void {
  stats.deadLetters++;
  stats.deadLettersByKind.set(kind, (stats.deadLettersByKind.get(kind) ?? 0) + 1);
}

export function countMessage(into: Map<string, { messages: number; bytes: number }>, type: string, bytes: number): void {
  const c = into.get(type);
  if (c === undefined) into.set(type, { messages: 1, bytes });
  else {
    c.messages++;
    c.bytes += bytes;
  }
}

/**
 * Why an entry was dead-lettered: `malformed` (undecodable, wrong fields),
 * `oversized` (more bytes than an entry may have), `unauthentic` (no valid
 * MAC while the fabric has a secret), `trimmed` (deleted from the stream
 * before it was handled), `refused` (well formed, but against the fabric's
 * terms: demand beyond the subscription's, a sender that is not alive, no
 * such subscription), `failed` (handling it threw).
 */
export type DeadLetterKind = 'malformed' | 'oversized' | 'unauthentic' | 'trimmed' | 'refused' | 'failed';

export const DEAD_LETTER_KINDS: readonly DeadLetterKind[] = ['malformed', 'oversized', 'unauthentic', 'trimmed', 'refused', 'failed'];

export interface DeadLetter {
  readonly inbox: string;
  readonly entryId: string;
  readonly kind: DeadLetterKind;
  readonly reason: string;
}

/** A message given up on: its subscription must end, so both sides make it anew. */
export interface SendFailure {
  readonly inbox: string;
  readonly message: WireMessage;
  readonly error: Error;
}

export interface TransportEvents {
  /** An entry was moved to the dead-letter stream and acknowledged. */
  'dead-letter': [DeadLetter];
  /** A send Redis refused; it is tried again, in order with what follows it to the same inbox. */
  'send-retry': [{ readonly inbox: string; readonly error: Error }];
  /** A message that could not be sent after its retries (or ever: too large). */
  'send-failed': [SendFailure];
  /** A background failure (a lost connection, a failed read); the transport retries by itself. */
  error: [Error];
}

/**
 * Carries wire messages between stage instances on different nodes. Each
 * stage instance has one inbox, read by its node alone; entries stay
 * pending until acknowledged, and a node that restarts reads its pending
 * entries again before new ones. One conformance suite runs against every
 * implementation.
 */
export interface Transport extends EventEmitter<TransportEvents> {
  /**
   * Starts reading these inboxes and hands every entry to `deliver`. Resolves
   * once the entries left pending by an earlier run have been delivered.
   */
  open(inboxes: readonly string[], deliver: (entry: InboundEntry) => void): Promise<void>;
  /**
   * Appends a message to an inbox. Sends to one inbox arrive in order; a
   * send Redis refuses is tried again (with what follows it), and one given
   * up on is reported as `send-failed`.
   */
  send(inbox: string, message: WireMessage): void;
  /** Acknowledges entries, which removes them from the inbox. */
  ack(inbox: string, entryIds: readonly string[]): void;
  /** Moves a delivered entry the fabric refuses to the dead-letter stream, with why, and acknowledges it. */
  deadLetter(entry: InboundEntry, kind: DeadLetterKind, reason: string): void;
  /**
   * Marks this node alive for `ttlMs`, and publishes its status snapshot if
   * given. With `onlyIfAbsent`, writes nothing when the node's heartbeat key
   * exists; resolves whether the beat was written.
   */
  beat(node: string, incarnation: string, ttlMs: number, status?: string, options?: { readonly onlyIfAbsent?: boolean }): Promise<boolean>;
  /** The incarnation of each of these nodes that is alive now (a heartbeat that cannot be taken counts as none). */
  alive(nodes: readonly string[]): Promise<Map<string, string>>;
  /** What each of these nodes' heartbeat keys holds now: a beat, or why it was refused; absent when there is no key. */
  heartbeats(nodes: readonly string[]): Promise<Map<string, HeartbeatReading>>;
  /** Entries in an inbox, pending ones included. */
  inboxLength(inbox: string): Promise<number>;
  /** Entries of an inbox read and not yet acknowledged. */
  inboxPending(inbox: string): Promise<number>;
  /** Counters since the transport was made, for metrics. */
  readonly stats: TransportStats;
  close(): Promise<void>;
}
