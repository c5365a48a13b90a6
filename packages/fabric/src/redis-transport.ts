import { EventEmitter } from 'node:events';
import { backoffMs, type Clock, FabricError, systemClock } from '@stagefabric/runtime';
import { Redis, type RedisOptions } from 'ioredis';
import { decodeMessage, encodeMessage } from './codec.js';
import { INBOX_GROUP, type RedisKeys, redisKeys } from './redis-keys.js';
import { countMessage, type InboundEntry, newTransportStats, type Transport, type TransportEvents } from './transport.js';
import type { WireMessage } from './wire.js';

export interface RedisTransportOptions {
  readonly url: string;
  /** Separates fabrics sharing one Redis. Default 'default'. */
  readonly namespace?: string;
  /** This node's name: the one consumer of its inboxes' group. */
  readonly node: string;
  /** Longest a blocking read waits before it checks whether to stop. Default 1000 ms. */
  readonly blockMs?: number;
  /** Entries read per call. Default 100. */
  readonly readCount?: number;
  /** Hard cap on one inbox, against a flood of garbage; demand keeps real traffic far below it. Default 100 000. */
  readonly maxInboxEntries?: number;
  /** Largest batch an events entry may carry. Default 100 000. */
  readonly maxEventsPerEntry?: number;
  /** Dead letters kept. Default 10 000. */
  readonly maxDeadLetters?: number;
  /** Times the waits between failed reads. Default: the system clock. */
  readonly clock?: Clock;
}

export const REDIS_TRANSPORT_DEFAULTS = {
  namespace: 'default',
  blockMs: 1000,
  readCount: 100,
  maxInboxEntries: 100_000,
  maxEventsPerEntry: 100_000,
  maxDeadLetters: 10_000,
} as const;

/** A dead node's last status stays visible this long. */
const STATUS_TTL_S = 86_400;

type StreamReply = [key: Buffer, entries: [id: Buffer, fields: Buffer[]][]][] | null;

/**
 * The Redis Streams transport: one stream per stage instance, read through a
 * consumer group whose one consumer is the hosting node. Blocking reads run
 * on their own connection with a finite timeout; entries are acknowledged and
 * deleted once handled, so a stream holds only what is in flight.
 */
export class RedisTransport extends EventEmitter<TransportEvents> implements Transport {
  private readonly commands: Redis;
  private readonly reader: Redis;
  private readonly keys: RedisKeys;
  private readonly options: Required<Omit<RedisTransportOptions, 'url' | 'clock'>>;
  private readonly clock: Clock;
  private inboxes: string[] = [];
  private deliver: (entry: InboundEntry) => void = () => {};
  private closing = false;
  readonly stats = newTransportStats();
  private readonly pendingAcks = new Map<string, string[]>();
  private ackScheduled = false;
  private loop: Promise<void> | undefined;

  constructor(options: RedisTransportOptions) {
    super();
    const { clock = systemClock, ...rest } = options;
    this.options = { ...REDIS_TRANSPORT_DEFAULTS, ...rest };
    this.clock = clock;
    this.keys = redisKeys(this.options.namespace);
    const connection: RedisOptions = {
      // Keep commands queued across a reconnect instead of failing them.
      maxRetriesPerRequest: null,
      retryStrategy: (times) => backoffMs(times, { baseMs: 50, maxMs: 2000 }),
      lazyConnect: false,
    };
    // Commands issued in one turn share one write.
    this.commands = new Redis(options.url, { ...connection, enableAutoPipelining: true, connectionName: `sf-${options.node}-cmd` });
    this.reader = new Redis(options.url, { ...connection, connectionName: `sf-${options.node}-read` });
    for (const client of [this.commands, this.reader]) {
      client.on('error', (error: Error) => this.emit('error', error));
      client.on('reconnecting', () => this.stats.reconnects++);
    }
  }

  async open(inboxes: readonly string[], deliver: (entry: InboundEntry) => void): Promise<void> {
    this.inboxes = [...inboxes];
    this.deliver = deliver;
    await this.ensureGroups();
    await this.readBacklog();
    this.loop = this.readLoop();
  }

  send(inbox: string, message: WireMessage): void {
    const bytes = encodeMessage(message);
    countMessage(this.stats.sent, message.t, bytes.length);
    this.commands
      .xadd(this.keys.inbox(inbox), 'MAXLEN', '~', this.options.maxInboxEntries, '*', 'm', bytes)
      .catch((error: Error) => this.emit('error', error));
  }

  ack(inbox: string, entryIds: readonly string[]): void {
    if (entryIds.length === 0) return;
    const ids = this.pendingAcks.get(inbox);
    if (ids === undefined) this.pendingAcks.set(inbox, [...entryIds]);
    else ids.push(...entryIds);
    // Acknowledgements wait for the end of this turn: whatever the turn sends (an ask) goes first, and they go together.
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      setImmediate(() => this.flushAcks());
    }
  }

  private flushAcks(): void {
    this.ackScheduled = false;
    if (this.pendingAcks.size === 0) return;
    const batch = this.commands.multi();
    for (const [inbox, ids] of this.pendingAcks) {
      const key = this.keys.inbox(inbox);
      batch.xack(key, INBOX_GROUP, ...ids).xdel(key, ...ids);
    }
    this.pendingAcks.clear();
    batch.exec().catch((error: Error) => this.emit('error', error));
  }

  async beat(node: string, incarnation: string, ttlMs: number, status?: string): Promise<void> {
    const beat = this.commands.multi().set(this.keys.heartbeat(node), incarnation, 'PX', ttlMs);
    if (status !== undefined) beat.set(this.keys.status(node), status, 'EX', STATUS_TTL_S);
    await beat.exec();
  }

  async alive(nodes: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (nodes.length === 0) return out;
    const values = await this.commands.mget(...nodes.map((n) => this.keys.heartbeat(n)));
    nodes.forEach((node, i) => {
      const v = values[i];
      if (typeof v === 'string') out.set(node, v);
    });
    return out;
  }

  async inboxLength(inbox: string): Promise<number> {
    return this.commands.xlen(this.keys.inbox(inbox));
  }

  async inboxPending(inbox: string): Promise<number> {
    const summary = (await this.commands.xpending(this.keys.inbox(inbox), INBOX_GROUP).catch(() => [0])) as [number, ...unknown[]];
    return Number(summary[0] ?? 0);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    await this.loop;
    this.flushAcks();
    await Promise.allSettled([this.commands.quit(), this.reader.quit()]);
  }

  /** Creates each inbox's group from the start of the stream, so entries sent before this node started are read. */
  private async ensureGroups(): Promise<void> {
    for (const inbox of this.inboxes) {
      try {
        await this.commands.xgroup('CREATE', this.keys.inbox(inbox), INBOX_GROUP, '0', 'MKSTREAM');
      } catch (error) {
        if (!String((error as Error).message).startsWith('BUSYGROUP')) throw error;
      }
    }
  }

  /** One XREADGROUP for this node; `ids` pairs with `keys` ('0'-based ids re-read pending entries, '>' reads new ones). */
  private async readGroup(keys: readonly string[], ids: readonly string[], blockMs?: number): Promise<StreamReply> {
    const block = blockMs === undefined ? [] : ['BLOCK', blockMs];
    const args = ['GROUP', INBOX_GROUP, this.options.node, 'COUNT', this.options.readCount, ...block, 'STREAMS', ...keys, ...ids];
    return (await this.reader.callBuffer('XREADGROUP', args)) as StreamReply;
  }

  /**
   * Before open() resolves: first the entries this node read in an earlier
   * run but never acknowledged (it crashed), then those already waiting, so
   * the node boots having seen everything sent to it while it was away.
   */
  private async readBacklog(): Promise<void> {
    for (const inbox of this.inboxes) {
      const key = this.keys.inbox(inbox);
      let after = '0';
      for (;;) {
        const entries = (await this.readGroup([key], [after]))?.[0]?.[1] ?? [];
        if (entries.length === 0) break;
        this.stats.redeliveries += entries.length;
        this.handle(inbox, entries);
        after = (entries[entries.length - 1] as [Buffer, Buffer[]])[0].toString();
      }
      for (;;) {
        const entries = (await this.readGroup([key], ['>']))?.[0]?.[1] ?? [];
        if (entries.length === 0) break;
        this.handle(inbox, entries);
      }
    }
  }

  private async readLoop(): Promise<void> {
    const keys = this.inboxes.map((i) => this.keys.inbox(i));
    const inboxByKey = new Map(this.inboxes.map((i) => [this.keys.inbox(i), i]));
    let failures = 0;
    while (!this.closing && keys.length > 0) {
      try {
        const reply = await this.readGroup(
          keys,
          keys.map(() => '>'),
          this.options.blockMs,
        );
        failures = 0;
        for (const [key, entries] of reply ?? []) this.handle(inboxByKey.get(key.toString()) as string, entries);
      } catch (error) {
        if (this.closing) break;
        this.emit('error', error as Error);
        // A restarted Redis lost the groups (it keeps nothing on disk): make them again.
        if (String((error as Error).message).includes('NOGROUP')) await this.ensureGroups().catch(() => {});
        failures++;
        await new Promise<void>((r) => this.clock.setTimeout(r, backoffMs(failures, { baseMs: 100, maxMs: 2000 })));
      }
    }
  }

  private handle(inbox: string, entries: [Buffer, Buffer[]][]): void {
    for (const [rawId, fields] of entries) {
      const entryId = rawId.toString();
      const bytes = fieldValue(fields, 'm');
      let message: WireMessage;
      try {
        if (bytes === undefined) throw new FabricError('SF_BAD_WIRE_MESSAGE', 'entry has no field "m"');
        message = decodeMessage(bytes, this.options.maxEventsPerEntry);
      } catch (error) {
        this.deadLetter(inbox, entryId, (error as Error).message, fields);
        continue;
      }
      countMessage(this.stats.received, message.t, bytes?.length ?? 0);
      this.deliver({ inbox, entryId, message });
    }
  }

  private deadLetter(inbox: string, entryId: string, reason: string, fields: Buffer[]): void {
    const raw = Buffer.concat(fields.slice(0, 8)).subarray(0, 4096);
    this.commands
      .multi()
      .xadd(
        this.keys.deadLetters,
        'MAXLEN',
        '~',
        this.options.maxDeadLetters,
        '*',
        'inbox',
        inbox,
        'entry',
        entryId,
        'reason',
        reason,
        'raw',
        raw,
      )
      .xack(this.keys.inbox(inbox), INBOX_GROUP, entryId)
      .xdel(this.keys.inbox(inbox), entryId)
      .exec()
      .catch((error: Error) => this.emit('error', error));
    this.stats.deadLetters++;
    this.emit('dead-letter', { inbox, entryId, reason });
  }
}

function fieldValue(fields: Buffer[], name: string): Buffer | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]?.toString() === name) return fields[i + 1];
  return undefined;
}
