import { EventEmitter } from 'node:events';
import { decodeMessage, encodeEntries } from './codec.js';
import { FabricSecret } from './fabric-secret.js';
import { decodeHeartbeat, encodeHeartbeat, type HeartbeatReading, isRefused } from './heartbeat.js';
import {
  countDeadLetter,
  countMessage,
  type DeadLetterKind,
  type InboundEntry,
  newTransportStats,
  type Transport,
  type TransportEvents,
} from './transport.js';
import type { WireMessage } from './wire.js';

/** One entry as stored: the encoded message and, on a fabric with a secret, its MAC. */
interface StoredEntry {
  readonly bytes: Buffer;
  readonly mac: Buffer | undefined;
}

interface Inbox {
  /** Entries not yet acknowledged, in order. */
  readonly entries: Map<string, StoredEntry>;
  next: number;
  reader: MemoryTransport | undefined;
}

/**
 * What several in-process transports share: the inboxes and heartbeats a
 * Redis would hold. Messages are stored encoded, so the in-process path
 * exercises the same wire format as Redis.
 */
export class MemoryFabric {
  readonly inboxes = new Map<string, Inbox>();
  readonly heartbeats = new Map<string, { incarnation: string; value: string; expiresAt: number }>();
  readonly deadLetters: { inbox: string; entryId: string; kind: DeadLetterKind; reason: string }[] = [];
  readonly statuses = new Map<string, string>();

  constructor(readonly now: () => number = Date.now) {}

  inbox(name: string): Inbox {
    let inbox = this.inboxes.get(name);
    if (inbox === undefined) {
      inbox = { entries: new Map(), next: 1, reader: undefined };
      this.inboxes.set(name, inbox);
    }
    return inbox;
  }

  /** Appends raw bytes (and a MAC, if given), as a foreign writer might. */
  appendRaw(name: string, bytes: Buffer, mac?: Buffer): string {
    const inbox = this.inbox(name);
    const id = `${inbox.next++}-0`;
    const entry = { bytes, mac };
    inbox.entries.set(id, entry);
    inbox.reader?.arrived(name, id, entry);
    return id;
  }

  /** Writes a heartbeat key's value as a foreign writer might. */
  writeHeartbeat(node: string, value: string, ttlMs: number): void {
    this.heartbeats.set(node, { incarnation: '', value, expiresAt: this.now() + ttlMs });
  }
}

export interface MemoryTransportOptions {
  readonly fabric: MemoryFabric;
  readonly maxEventsPerEntry?: number;
  /** Largest entry in bytes, as for Redis. Default 8 MiB. */
  readonly maxEntryBytes?: number;
  /** The fabric's shared secret, as for Redis. */
  readonly secret?: string;
}

/** The in-process transport: same contract and wire format as Redis, for one process or tests. */
export class MemoryTransport extends EventEmitter<TransportEvents> implements Transport {
  private readonly fabric: MemoryFabric;
  private readonly maxEvents: number;
  private readonly maxEntryBytes: number;
  private readonly secret: FabricSecret | undefined;
  private deliver: ((entry: InboundEntry) => void) | undefined;
  private readonly open_ = new Set<string>();
  readonly stats = newTransportStats();
  /** Entries handed to the reader and not yet acknowledged, per inbox. */
  private readonly delivered = new Map<string, Set<string>>();
  private readonly startedAt = new Map<string, number>();

  constructor(options: MemoryTransportOptions) {
    super();
    this.fabric = options.fabric;
    this.maxEvents = options.maxEventsPerEntry ?? 100_000;
    this.maxEntryBytes = options.maxEntryBytes ?? 8 * 1024 * 1024;
    this.secret = options.secret === undefined ? undefined : new FabricSecret(options.secret, '');
  }

  async open(inboxes: readonly string[], deliver: (entry: InboundEntry) => void): Promise<void> {
    this.deliver = deliver;
    for (const name of inboxes) {
      const inbox = this.fabric.inbox(name);
      inbox.reader = this;
      this.open_.add(name);
      // Unacknowledged entries first, as a restarted Redis reader sees its pending list.
      for (const [id, entry] of inbox.entries) this.handle(name, id, entry);
    }
  }

  send(inbox: string, message: WireMessage): void {
    let parts: { message: WireMessage; bytes: Buffer }[];
    try {
      parts = encodeEntries(message, this.maxEntryBytes);
    } catch (error) {
      this.stats.sendFailures++;
      this.emit('send-failed', { inbox, message, error: error as Error });
      return;
    }
    for (const part of parts) {
      countMessage(this.stats.sent, part.message.t, part.bytes.length);
      this.fabric.appendRaw(inbox, part.bytes, this.secret?.signEntry(inbox, part.bytes));
    }
  }

  ack(inbox: string, entryIds: readonly string[]): void {
    const entries = this.fabric.inbox(inbox).entries;
    const seen = this.delivered.get(inbox);
    for (const id of entryIds) {
      entries.delete(id);
      seen?.delete(id);
    }
  }

  deadLetter(entry: InboundEntry, kind: DeadLetterKind, reason: string): void {
    this.moveToDeadLetters(entry.inbox, entry.entryId, kind, reason);
  }

  async beat(
    node: string,
    incarnation: string,
    ttlMs: number,
    status?: string,
    options: { onlyIfAbsent?: boolean } = {},
  ): Promise<boolean> {
    const now = this.fabric.now();
    const existing = this.fabric.heartbeats.get(node);
    if (options.onlyIfAbsent === true && existing !== undefined && existing.expiresAt > now) return false;
    const startedAtMs = this.startedAt.get(incarnation) ?? now;
    this.startedAt.set(incarnation, startedAtMs);
    const value = encodeHeartbeat({ node, incarnation, startedAtMs, atMs: now, ttlMs }, this.secret);
    this.fabric.heartbeats.set(node, { incarnation, value, expiresAt: now + ttlMs });
    if (status !== undefined) this.fabric.statuses.set(node, status);
    return true;
  }

  async heartbeats(nodes: readonly string[]): Promise<Map<string, HeartbeatReading>> {
    const out = new Map<string, HeartbeatReading>();
    for (const node of nodes) {
      const hb = this.fabric.heartbeats.get(node);
      if (hb !== undefined && hb.expiresAt > this.fabric.now()) out.set(node, decodeHeartbeat(node, hb.value, this.secret));
    }
    return out;
  }

  async alive(nodes: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const [node, reading] of await this.heartbeats(nodes)) if (!isRefused(reading)) out.set(node, reading.incarnation);
    return out;
  }

  async inboxLength(inbox: string): Promise<number> {
    return this.fabric.inbox(inbox).entries.size;
  }

  async inboxPending(inbox: string): Promise<number> {
    return this.delivered.get(inbox)?.size ?? 0;
  }

  async close(): Promise<void> {
    for (const name of this.open_) {
      const inbox = this.fabric.inbox(name);
      if (inbox.reader === this) inbox.reader = undefined;
    }
    this.open_.clear();
    this.deliver = undefined;
  }

  /** @internal */
  arrived(inbox: string, id: string, entry: StoredEntry): void {
    // Delivered on a later turn, as a network read would be.
    queueMicrotask(() => {
      if (this.fabric.inbox(inbox).entries.has(id)) this.handle(inbox, id, entry);
    });
  }

  private handle(inbox: string, entryId: string, { bytes, mac }: StoredEntry): void {
    if (this.deliver === undefined) return;
    if (bytes.length > this.maxEntryBytes) {
      this.moveToDeadLetters(inbox, entryId, 'oversized', `an entry of ${bytes.length} bytes exceeds the limit of ${this.maxEntryBytes}`);
      return;
    }
    if (this.secret !== undefined && !this.secret.verifyEntry(inbox, bytes, mac)) {
      this.moveToDeadLetters(inbox, entryId, 'unauthentic', 'not authentic: no valid MAC for this fabric’s secret');
      return;
    }
    let message: WireMessage;
    try {
      message = decodeMessage(bytes, this.maxEvents);
    } catch (error) {
      this.moveToDeadLetters(inbox, entryId, 'malformed', (error as Error).message);
      return;
    }
    countMessage(this.stats.received, message.t, bytes.length);
    const seen = this.delivered.get(inbox) ?? new Set<string>();
    this.delivered.set(inbox, seen);
    if (seen.has(entryId)) this.stats.redeliveries++;
    seen.add(entryId);
    try {
      this.deliver({ inbox, entryId, message, bytes: bytes.length });
    } catch (error) {
      this.moveToDeadLetters(inbox, entryId, 'failed', `handling it failed: ${(error as Error).message}`);
    }
  }

  private moveToDeadLetters(inbox: string, entryId: string, kind: DeadLetterKind, reason: string): void {
    this.fabric.deadLetters.push({ inbox, entryId, kind, reason });
    this.fabric.inbox(inbox).entries.delete(entryId);
    this.delivered.get(inbox)?.delete(entryId);
    countDeadLetter(this.stats, kind);
    this.emit('dead-letter', { inbox, entryId, kind, reason });
  }
}
