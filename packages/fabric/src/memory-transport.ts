import { EventEmitter } from 'node:events';
import { decodeMessage, encodeMessage } from './codec.js';
import { countMessage, type InboundEntry, newTransportStats, type Transport, type TransportEvents } from './transport.js';
import type { WireMessage } from './wire.js';

interface Inbox {
  /** Entries not yet acknowledged, in order, with whether the reader has seen them. */
  readonly entries: Map<string, Buffer>;
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
  readonly heartbeats = new Map<string, { incarnation: string; expiresAt: number }>();
  readonly deadLetters: { inbox: string; entryId: string; reason: string }[] = [];
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

  /** Appends raw bytes, as a foreign writer might. */
  appendRaw(name: string, bytes: Buffer): string {
    const inbox = this.inbox(name);
    const id = `${inbox.next++}-0`;
    inbox.entries.set(id, bytes);
    inbox.reader?.arrived(name, id, bytes);
    return id;
  }
}

export interface MemoryTransportOptions {
  readonly fabric: MemoryFabric;
  readonly maxEventsPerEntry?: number;
}

/** The in-process transport: same contract and wire format as Redis, for one process or tests. */
export class MemoryTransport extends EventEmitter<TransportEvents> implements Transport {
  private readonly fabric: MemoryFabric;
  private readonly maxEvents: number;
  private deliver: ((entry: InboundEntry) => void) | undefined;
  private readonly open_ = new Set<string>();
  readonly stats = newTransportStats();
  /** Entries handed to the reader and not yet acknowledged, per inbox. */
  private readonly delivered = new Map<string, Set<string>>();

  constructor(options: MemoryTransportOptions) {
    super();
    this.fabric = options.fabric;
    this.maxEvents = options.maxEventsPerEntry ?? 100_000;
  }

  async open(inboxes: readonly string[], deliver: (entry: InboundEntry) => void): Promise<void> {
    this.deliver = deliver;
    for (const name of inboxes) {
      const inbox = this.fabric.inbox(name);
      inbox.reader = this;
      this.open_.add(name);
      // Unacknowledged entries first, as a restarted Redis reader sees its pending list.
      for (const [id, bytes] of inbox.entries) this.handle(name, id, bytes);
    }
  }

  send(inbox: string, message: WireMessage): void {
    const bytes = encodeMessage(message);
    countMessage(this.stats.sent, message.t, bytes.length);
    this.fabric.appendRaw(inbox, bytes);
  }

  ack(inbox: string, entryIds: readonly string[]): void {
    const entries = this.fabric.inbox(inbox).entries;
    const seen = this.delivered.get(inbox);
    for (const id of entryIds) {
      entries.delete(id);
      seen?.delete(id);
    }
  }

  async beat(node: string, incarnation: string, ttlMs: number, status?: string): Promise<void> {
    this.fabric.heartbeats.set(node, { incarnation, expiresAt: this.fabric.now() + ttlMs });
    if (status !== undefined) this.fabric.statuses.set(node, status);
  }

  async alive(nodes: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const node of nodes) {
      const hb = this.fabric.heartbeats.get(node);
      if (hb !== undefined && hb.expiresAt > this.fabric.now()) out.set(node, hb.incarnation);
    }
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
  arrived(inbox: string, id: string, bytes: Buffer): void {
    // Delivered on a later turn, as a network read would be.
    queueMicrotask(() => {
      if (this.fabric.inbox(inbox).entries.has(id)) this.handle(inbox, id, bytes);
    });
  }

  private handle(inbox: string, entryId: string, bytes: Buffer): void {
    if (this.deliver === undefined) return;
    let message: WireMessage;
    try {
      message = decodeMessage(bytes, this.maxEvents);
    } catch (error) {
      const reason = (error as Error).message;
      this.fabric.deadLetters.push({ inbox, entryId, reason });
      this.fabric.inbox(inbox).entries.delete(entryId);
      this.stats.deadLetters++;
      this.emit('dead-letter', { inbox, entryId, reason });
      return;
    }
    countMessage(this.stats.received, message.t, bytes.length);
    const seen = this.delivered.get(inbox) ?? new Set<string>();
    this.delivered.set(inbox, seen);
    if (seen.has(entryId)) this.stats.redeliveries++;
    seen.add(entryId);
    this.deliver({ inbox, entryId, message });
  }
}
