import type { EventEmitter } from 'node:events';
import type { WireMessage } from './wire.js';

/** One entry read from an inbox. Acknowledge it once what it carried has been handled. */
export interface InboundEntry {
  /** The local stage instance whose inbox it came from, `stage@node`. */
  readonly inbox: string;
  readonly entryId: string;
  readonly message: WireMessage;
}

/** Messages and bytes per message type, each way. */
export interface TransportStats {
  readonly sent: Map<string, { messages: number; bytes: number }>;
  readonly received: Map<string, { messages: number; bytes: number }>;
  /** Entries delivered again after a restart (read before, never acknowledged). */
  redeliveries: number;
  deadLetters: number;
  reconnects: number;
}

export function newTransportStats(): TransportStats {
  return { sent: new Map(), received: new Map(), redeliveries: 0, deadLetters: 0, reconnects: 0 };
}

export function countMessage(into: Map<string, { messages: number; bytes: number }>, type: string, bytes: number): void {
  const c = into.get(type);
  if (c === undefined) into.set(type, { messages: 1, bytes });
  else {
    c.messages++;
    c.bytes += bytes;
  }
}

export interface DeadLetter {
  readonly inbox: string;
  readonly entryId: string;
  readonly reason: string;
}

export interface TransportEvents {
  /** A malformed entry was moved to the dead-letter stream and acknowledged. */
  'dead-letter': [DeadLetter];
  /** A background failure (a lost connection, a failed send); the transport retries by itself. */
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
  /** Appends a message to an inbox. Sends to one inbox arrive in order. */
  send(inbox: string, message: WireMessage): void;
  /** Acknowledges entries, which removes them from the inbox. */
  ack(inbox: string, entryIds: readonly string[]): void;
  /** Marks this node alive for `ttlMs`, and publishes its status snapshot if given. */
  beat(node: string, incarnation: string, ttlMs: number, status?: string): Promise<void>;
  /** The incarnation of each of these nodes that is alive now. */
  alive(nodes: readonly string[]): Promise<Map<string, string>>;
  /** Entries in an inbox, pending ones included. */
  inboxLength(inbox: string): Promise<number>;
  /** Entries of an inbox read and not yet acknowledged. */
  inboxPending(inbox: string): Promise<number>;
  /** Counters since the transport was made, for metrics. */
  readonly stats: TransportStats;
  close(): Promise<void>;
}
