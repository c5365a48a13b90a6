import { EventEmitter } from 'node:events';
import { backoffMs, type Clock, FabricError, systemClock, type TimerHandle } from '@stagefabric/runtime';
import type { Redis, RedisOptions } from 'ioredis';
import { decodeMessage, encodeEntries, encodeMessage } from './codec.js';
import { FabricSecret } from './fabric-secret.js';
import { decodeHeartbeat, encodeHeartbeat, type HeartbeatReading, isRefused } from './heartbeat.js';
import { checkName } from './names.js';
import { openRedis, safeRedisError } from './redis-connection.js';
import { INBOX_GROUP, type RedisKeys, redisKeys } from './redis-keys.js';
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
  /** Largest entry in bytes: a larger batch is sent as several entries, a larger entry read is dead-lettered undecoded. Default 8 MiB. */
  readonly maxEntryBytes?: number;
  /** Dead letters kept. Default 10 000. */
  readonly maxDeadLetters?: number;
  /** Times the waits between failed reads. Default: the system clock. */
  readonly clock?: Clock;
  /** How long sends Redis refuses are tried again before their subscription is ended (`send-failed`). Default 30 000 ms. */
  readonly sendRetryMs?: number;
  /** Longest close() waits for sends and the read loop before it drops the connections. Default 2000 ms. */
  readonly closeTimeoutMs?: number;
  /** The fabric's shared secret: entries and heartbeats are signed with it, and those without a valid MAC refused. */
  readonly secret?: string | undefined;
}

export const REDIS_TRANSPORT_DEFAULTS = {
  namespace: 'default',
  blockMs: 1000,
  readCount: 100,
  maxInboxEntries: 100_000,
  maxEventsPerEntry: 100_000,
  maxEntryBytes: 8 * 1024 * 1024,
  maxDeadLetters: 10_000,
  sendRetryMs: 30_000,
  closeTimeoutMs: 2000,
} as const;

/** A dead node's last status stays visible this long; so does its name in the namespace's node registry. */
const STATUS_TTL_S = 86_400;
/** Entries of one inbox sent in one MULTI. */
const SEND_BATCH = 500;

type StreamReply = [key: Buffer, entries: [id: Buffer, fields: Buffer[] | null][]][] | null;

/** A single-entry XADD waiting for the end of the turn, and the outbox's continuation. */
interface TurnSend {
  readonly key: string;
  readonly fields: (string | Buffer)[];
  readonly resolve: (value: number) => void;
  readonly reject: (error: unknown) => void;
}

/** Messages on their way to one inbox: one batch in flight at a time, so a refused batch is sent again before anything after it. */
interface Outbox {
  readonly queue: { readonly message: WireMessage; readonly bytes: Buffer }[];
  inFlight: boolean;
  retry: TimerHandle | undefined;
  failures: number;
  failingSinceMs: number | undefined;
}

/**
 * The Redis Streams transport: one stream per stage instance, read through a
 * consumer group whose one consumer is the hosting node. Blocking reads run
 * on their own connection with a finite timeout; entries are acknowledged and
 * deleted once handled, so a stream holds only what is in flight. Nothing read
 * is trusted: an entry is checked for size, MAC and shape before it is
 * decoded and delivered, and whatever fails goes to the dead-letter stream.
 */
export class RedisTransport extends EventEmitter<TransportEvents> implements Transport {
  private readonly commands: Redis;
  private readonly reader: Redis;
  private readonly keys: RedisKeys;
  private readonly options: Required<Omit<RedisTransportOptions, 'url' | 'secret' | 'clock'>>;
  private readonly secret: FabricSecret | undefined;
  private readonly clock: Clock;
  private inboxes: string[] = [];
  private deliver: (entry: InboundEntry) => void = () => {};
  private closing = false;
  readonly stats = newTransportStats();
  private readonly pendingAcks = new Map<string, string[]>();
  /** Single-entry sends of this turn, written together with its acknowledgements (flushTurn). */
  private turnSends: TurnSend[] = [];
  private turnScheduled = false;
  private loop: Promise<void> | undefined;
  private readonly outboxes = new Map<string, Outbox>();
  /** When this process first beat for an incarnation: a restart's beat carries a later start. */
  private readonly startedAt = new Map<string, number>();
  private readonly url: string;

  constructor(options: RedisTransportOptions) {
    super();
    const { clock = systemClock, ...rest } = options;
    this.clock = clock;
    this.url = options.url;
    this.options = { ...REDIS_TRANSPORT_DEFAULTS, ...stripSecret(rest) };
    checkName('node', this.options.node);
    checkName('namespace', this.options.namespace);
    this.secret =
      options.secret === undefined || options.secret === '' ? undefined : new FabricSecret(options.secret, this.options.namespace);
    this.keys = redisKeys(this.options.namespace);
    const connection: RedisOptions = {
      // Keep commands queued across a reconnect instead of failing them; callers that must answer bound their waits.
      maxRetriesPerRequest: null,
      retryStrategy: (times) => backoffMs(times, { baseMs: 50, maxMs: 2000 }),
      lazyConnect: false,
    };
    // Commands issued in one turn share one write.
    this.commands = openRedis(options.url, { ...connection, enableAutoPipelining: true, connectionName: `sf-${options.node}-cmd` });
    this.reader = openRedis(options.url, { ...connection, connectionName: `sf-${options.node}-read` });
    for (const client of [this.commands, this.reader]) {
      client.on('error', (error: Error) => this.emit('error', this.safe(error)));
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
    let parts: { message: WireMessage; bytes: Buffer }[];
    try {
      parts = encodeEntries(message, this.options.maxEntryBytes);
    } catch (error) {
      this.stats.sendFailures++;
      this.emit('send-failed', { inbox, message, error: error as Error });
      return;
    }
    let outbox = this.outboxes.get(inbox);
    if (outbox === undefined) {
      outbox = { queue: [], inFlight: false, retry: undefined, failures: 0, failingSinceMs: undefined };
      this.outboxes.set(inbox, outbox);
    }
    for (const part of parts) {
      countMessage(this.stats.sent, part.message.t, part.bytes.length);
      outbox.queue.push(part);
    }
    this.flushOutbox(inbox, outbox);
  }

  /** Sends what waits for `inbox`, in order, as one MULTI (a refused MULTI writes nothing: EXECABORT). */
  private flushOutbox(inbox: string, outbox: Outbox): void {
    if (outbox.inFlight || outbox.retry !== undefined || outbox.queue.length === 0) return;
    const batch = outbox.queue.slice(0, SEND_BATCH);
    const key = this.keys.inbox(inbox);
    const fields = (bytes: Buffer) => (this.secret === undefined ? ['m', bytes] : ['m', bytes, 'a', this.secret.signEntry(inbox, bytes)]);
    outbox.inFlight = true;
    const write =
      batch.length === 1
        ? new Promise<number>((resolve, reject) => {
            this.turnSends.push({ key, fields: fields((batch[0] as { bytes: Buffer }).bytes), resolve, reject });
            this.scheduleTurn();
          })
        : (() => {
            const multi = this.commands.multi();
            for (const { bytes } of batch) multi.xadd(key, 'MAXLEN', '~', this.options.maxInboxEntries, '*', ...fields(bytes));
            return multi.exec().then((replies) => {
              // Errors at EXEC time (a key that is not a stream) fail every XADD of the batch alike: all go again.
              const failed = (replies ?? []).find(([error]) => error !== null);
              if (failed !== undefined) throw failed[0];
              if (replies === null) throw new Error('transaction discarded');
              return 0;
            });
          })();
    write.then(
      () => {
        outbox.inFlight = false;
        outbox.queue.splice(0, batch.length);
        outbox.failures = 0;
        outbox.failingSinceMs = undefined;
        if (outbox.queue.length === 0) this.outboxes.delete(inbox);
        else this.flushOutbox(inbox, outbox);
      },
      (error: unknown) => {
        outbox.inFlight = false;
        const safe = this.safe(error);
        const now = this.clock.now();
        outbox.failingSinceMs ??= now;
        if (this.closing || now - outbox.failingSinceMs > this.options.sendRetryMs) {
          // Given up: each subscription concerned ends, and both sides make it anew.
          for (const { message } of outbox.queue.splice(0)) {
            this.stats.sendFailures++;
            this.emit('send-failed', { inbox, message, error: safe });
          }
          this.outboxes.delete(inbox);
          return;
        }
        this.stats.sendRetries += batch.length;
        this.emit('send-retry', { inbox, error: safe });
        outbox.failures++;
        outbox.retry = this.clock.setTimeout(
          () => {
            outbox.retry = undefined;
            this.flushOutbox(inbox, outbox);
          },
          backoffMs(outbox.failures, { baseMs: 50, maxMs: 2000 }),
        );
      },
    );
  }

  ack(inbox: string, entryIds: readonly string[]): void {
    if (entryIds.length === 0) return;
    const ids = this.pendingAcks.get(inbox);
    if (ids === undefined) this.pendingAcks.set(inbox, [...entryIds]);
    else ids.push(...entryIds);
    this.scheduleTurn();
  }

  /**
   * What this turn sends and acknowledges leaves in one write once the turn's
   * microtasks (the stage turns its reads caused) have run: process.nextTick
   * runs after them, and before the read loop blocks again (it waits for
   * setImmediate), so a reply is on its way before the next read is issued,
   * without waiting for the auto-pipeline's setImmediate.
   */
  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    process.nextTick(this.flushTurn);
  }

  private readonly flushTurn = (): void => {
    this.turnScheduled = false;
    const sends = this.turnSends;
    if (sends.length === 0 && this.pendingAcks.size === 0) return;
    this.turnSends = [];
    const pipeline = this.commands.pipeline();
    for (const { key, fields } of sends) pipeline.xadd(key, 'MAXLEN', '~', this.options.maxInboxEntries, '*', ...fields);
    // Acknowledgements need no atomicity (an entry acknowledged and not yet deleted is only trimmed later), so they
    // ride in the same write as plain commands, after the sends: a transaction per turn cost a producer agent more
    // than sending its events.
    for (const [inbox, ids] of this.pendingAcks) {
      const key = this.keys.inbox(inbox);
      pipeline.xack(key, INBOX_GROUP, ...ids).xdel(key, ...ids);
    }
    this.pendingAcks.clear();
    pipeline.exec().then(
      (replies) => {
        (replies ?? []).forEach(([error], i) => {
          const send = sends[i];
          if (send !== undefined) {
            if (error === null) send.resolve(0);
            else send.reject(error);
          } else if (error !== null) this.emit('error', this.safe(error));
        });
        if (replies === null) for (const send of sends) send.reject(new Error('pipeline discarded'));
      },
      (error: unknown) => {
        for (const send of sends) send.reject(error);
        this.emit('error', this.safe(error));
      },
    );
  };

  deadLetter(entry: InboundEntry, kind: DeadLetterKind, reason: string): void {
    this.moveToDeadLetters(entry.inbox, entry.entryId, kind, reason, encodeMessage(entry.message).subarray(0, 4096));
  }

  async beat(
    node: string,
    incarnation: string,
    ttlMs: number,
    status?: string,
    options: { onlyIfAbsent?: boolean } = {},
  ): Promise<boolean> {
    const now = this.clock.now();
    const startedAtMs = this.startedAt.get(incarnation) ?? now;
    const value = encodeHeartbeat({ node, incarnation, startedAtMs, atMs: now, ttlMs }, this.secret);
    const beat = this.commands.multi();
    if (options.onlyIfAbsent === true) beat.set(this.keys.heartbeat(node), value, 'PX', ttlMs, 'NX');
    else beat.set(this.keys.heartbeat(node), value, 'PX', ttlMs);
    beat.zadd(this.keys.nodes, now, node).zremrangebyscore(this.keys.nodes, '-inf', now - STATUS_TTL_S * 1000);
    if (status !== undefined) beat.set(this.keys.status(node), status, 'EX', STATUS_TTL_S);
    const replies = await beat.exec();
    const written = replies?.[0]?.[0] === null && replies[0][1] === 'OK';
    if (written && !this.startedAt.has(incarnation)) this.startedAt.set(incarnation, startedAtMs);
    return written;
  }

  async heartbeats(nodes: readonly string[]): Promise<Map<string, HeartbeatReading>> {
    const out = new Map<string, HeartbeatReading>();
    if (nodes.length === 0) return out;
    const values = await this.commands.mget(...nodes.map((n) => this.keys.heartbeat(n)));
    nodes.forEach((node, i) => {
      const v = values[i];
      if (typeof v === 'string') out.set(node, decodeHeartbeat(node, v, this.secret));
    });
    return out;
  }

  async alive(nodes: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const [node, reading] of await this.heartbeats(nodes)) if (!isRefused(reading)) out.set(node, reading.incarnation);
    return out;
  }

  async inboxLength(inbox: string): Promise<number> {
    return this.commands.xlen(this.keys.inbox(inbox));
  }

  async inboxPending(inbox: string): Promise<number> {
    const summary = (await this.commands.xpending(this.keys.inbox(inbox), INBOX_GROUP).catch(() => [0])) as [number, ...unknown[]];
    return Number(summary[0] ?? 0);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }

  /**
   * Stops reading, sends what is queued and lets the connections go, within
   * `closeTimeoutMs` whatever Redis does: past it, connections are dropped
   * and what was not sent is reported as `send-failed`.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const deadline = this.clock.now() + this.options.closeTimeoutMs;
    const until = (done: () => boolean) =>
      (async () => {
        while (!done() && this.clock.now() < deadline) await this.sleep(10);
      })();
    this.flushTurn();
    await Promise.race([this.loop, until(() => false)]);
    await until(() => this.outboxes.size === 0);
    const quit = Promise.allSettled([this.commands.quit(), this.reader.quit()]);
    await Promise.race([quit, until(() => false)]);
    this.commands.disconnect();
    this.reader.disconnect();
    for (const [inbox, outbox] of this.outboxes) {
      if (outbox.retry !== undefined) this.clock.clearTimeout(outbox.retry);
      for (const { message } of outbox.queue.splice(0)) {
        this.stats.sendFailures++;
        this.emit('send-failed', {
          inbox,
          message,
          error: new FabricError('SF_CALL_TIMEOUT', 'the transport closed before Redis took it'),
        });
      }
    }
    this.outboxes.clear();
  }

  /** Creates each inbox's group from the start of the stream, so entries sent before this node started are read. */
  private async ensureGroups(): Promise<void> {
    for (const inbox of this.inboxes) {
      try {
        await this.commands.xgroup('CREATE', this.keys.inbox(inbox), INBOX_GROUP, '0', 'MKSTREAM');
      } catch (error) {
        const message = String((error as Error).message);
        if (message.startsWith('BUSYGROUP')) continue;
        if (message.startsWith('WRONGTYPE')) {
          await this.removeNonStream(inbox);
          continue;
        }
        throw this.safe(error);
      }
    }
  }

  /**
   * An inbox key holding something other than a stream (written by someone
   * else) would fail every read of this node: it is recorded in the
   * dead-letter stream and removed, and the inbox made again.
   */
  private async removeNonStream(inbox: string): Promise<void> {
    const key = this.keys.inbox(inbox);
    const type = await this.commands.type(key);
    if (type === 'stream' || type === 'none') return;
    await this.commands.multi().del(key).xgroup('CREATE', key, INBOX_GROUP, '0', 'MKSTREAM').exec();
    this.moveToDeadLetters(inbox, '-', 'malformed', `the inbox key held a ${type}, not a stream: removed`, Buffer.alloc(0));
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
   * the node boots having seen everything sent to it while it was away. They
   * are checked exactly as entries read later are; a pending entry trimmed
   * from the stream meanwhile comes back without fields and is dead-lettered.
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
        after = (entries[entries.length - 1] as [Buffer, unknown])[0].toString();
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
        for (const [key, entries] of reply ?? []) {
          const inbox = inboxByKey.get(key.toString());
          if (inbox !== undefined) this.handle(inbox, entries);
        }
        // Block again only once what these entries caused has been written (flushTurn runs before
        // setImmediate): an answer leaves a write syscall earlier, and nothing read waits for it.
        if (reply !== null) await new Promise<void>((resolve) => setImmediate(resolve));
      } catch (error) {
        if (this.closing) break;
        this.emit('error', this.safe(error));
        const message = String((error as Error).message);
        // A restarted Redis lost the groups (it keeps nothing on disk): make them again. A key that is not a stream: remove it.
        if (message.includes('NOGROUP') || message.includes('WRONGTYPE')) await this.ensureGroups().catch(() => {});
        failures++;
        await new Promise<void>((r) => this.clock.setTimeout(r, backoffMs(failures, { baseMs: 100, maxMs: 2000 })));
      }
    }
  }

  /** Checks each entry (fields, size, MAC, shape) before delivering it; what fails is dead-lettered and the next one read. */
  private handle(inbox: string, entries: [Buffer, Buffer[] | null][]): void {
    for (const [rawId, fields] of entries) {
      const entryId = rawId.toString();
      if (fields === null) {
        this.moveToDeadLetters(
          inbox,
          entryId,
          'trimmed',
          'the entry was deleted before it was handled (the stream was trimmed)',
          Buffer.alloc(0),
        );
        continue;
      }
      const bytes = fieldValue(fields, 'm');
      if (bytes === undefined) {
        this.moveToDeadLetters(inbox, entryId, 'malformed', 'entry has no field "m"', rawSample(fields));
        continue;
      }
      if (bytes.length > this.options.maxEntryBytes) {
        this.moveToDeadLetters(
          inbox,
          entryId,
          'oversized',
          `an entry of ${bytes.length} bytes exceeds the limit of ${this.options.maxEntryBytes}`,
          rawSample(fields),
        );
        continue;
      }
      if (this.secret !== undefined && !this.secret.verifyEntry(inbox, bytes, fieldValue(fields, 'a'))) {
        this.moveToDeadLetters(inbox, entryId, 'unauthentic', 'not authentic: no valid MAC for this fabric’s secret', rawSample(fields));
        continue;
      }
      let message: WireMessage;
      try {
        message = decodeMessage(bytes, this.options.maxEventsPerEntry);
      } catch (error) {
        this.moveToDeadLetters(inbox, entryId, 'malformed', (error as Error).message, rawSample(fields));
        continue;
      }
      countMessage(this.stats.received, message.t, bytes.length);
      try {
        this.deliver({ inbox, entryId, message, bytes: bytes.length });
      } catch (error) {
        this.moveToDeadLetters(inbox, entryId, 'failed', `handling it failed: ${(error as Error).message}`, bytes.subarray(0, 4096));
      }
    }
  }

  /** Errors leave here without command arguments or credentials. */
  private safe(error: unknown): Error {
    return safeRedisError(error, this.url);
  }

  private moveToDeadLetters(inbox: string, entryId: string, kind: DeadLetterKind, reason: string, raw: Buffer): void {
    const key = this.keys.inbox(inbox);
    const record = ['inbox', inbox, 'entry', entryId, 'kind', kind, 'reason', reason, 'raw', raw];
    const multi = this.commands.multi().xadd(this.keys.deadLetters, 'MAXLEN', '~', this.options.maxDeadLetters, '*', ...record);
    if (entryId !== '-') multi.xack(key, INBOX_GROUP, entryId).xdel(key, entryId);
    multi.exec().catch((error: Error) => this.emit('error', this.safe(error)));
    countDeadLetter(this.stats, kind);
    this.emit('dead-letter', { inbox, entryId, kind, reason });
  }
}

/** The options without the URL and the secret, which are kept apart (and never logged). */
function stripSecret(options: RedisTransportOptions): Omit<RedisTransportOptions, 'url' | 'secret'> {
  const rest: Record<string, unknown> = { ...options };
  delete rest.url;
  delete rest.secret;
  return rest as Omit<RedisTransportOptions, 'url' | 'secret'>;
}

function fieldValue(fields: Buffer[], name: string): Buffer | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]?.toString() === name) return fields[i + 1];
  return undefined;
}

/** The first 4 KiB of an entry's fields, for the dead-letter record: enough to see what it was, never a copy of a huge one. */
function rawSample(fields: Buffer[]): Buffer {
  const parts: Buffer[] = [];
  let left = 4096;
  for (const f of fields.slice(0, 8)) {
    if (left <= 0) break;
    const part = f.subarray(0, left);
    parts.push(part);
    left -= part.length;
  }
  return Buffer.concat(parts);
}
