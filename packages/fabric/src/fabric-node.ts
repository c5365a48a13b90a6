import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { type Clock, FabricError, type StagePeer, type StageSystem, SUBSCRIPTION_DEFAULTS, type TimerHandle } from '@stagefabric/runtime';
import { type Heartbeat, type HeartbeatReading, isRefused } from './heartbeat.js';
import { checkName, splitKey } from './names.js';
import { RemoteConsumer } from './remote-consumer.js';
import { type DemandRecord, type HeldEntry, RemoteProducer, type RemoteProducerHost } from './remote-producer.js';
import type { DeadLetter, InboundEntry, SendFailure, Transport } from './transport.js';
import { toWireReason } from './wire.js';

export interface FabricNodeOptions {
  readonly node: string;
  readonly transport: Transport;
  readonly system: StageSystem;
  /** Times heartbeats, cut-off detection and epochs. Default: the system's clock. */
  readonly clock?: Clock;
  /** Heartbeat period. Default 1000 ms. */
  readonly heartbeatMs?: number;
  /** Beats a node may miss before it counts as dead. Default 3. */
  readonly missedBeats?: number;
  /** Events held for consumers that have not subscribed again yet. Default 100 000. */
  readonly maxOrphanEvents?: number;
  /** Bytes (as they were on the wire) of the events held so. Default 64 MiB. */
  readonly maxOrphanBytes?: number;
  /**
   * Called every heartbeat with what each subscription asked for and
   * received: the remote subscriptions of this node's consumers (live ones,
   * and those that ended since the last call) and every subscriber of this
   * node's producers, so an auditor can check that none ever received more
   * than it asked for.
   */
  readonly audit?: (records: readonly DemandRecord[]) => void;
}

export const FABRIC_DEFAULTS = { heartbeatMs: 1000, missedBeats: 3, maxOrphanEvents: 100_000, maxOrphanBytes: 64 * 1024 * 1024 } as const;

export type FabricEvent =
  | {
      readonly type: 'node-down';
      readonly node: string;
      /** `not-alive`: a node whose subscriptions this node held without ever reading its beat lives no more. */
      readonly reason: 'missed-heartbeats' | 'restarted' | 'this-node-cut-off' | 'not-alive';
    }
  /** This node could not beat for longer than its heartbeat lives (a partition, a stall): its subscriptions were ended. */
  | { readonly type: 'cut-off'; readonly silentMs: number }
  | { readonly type: 'node-up'; readonly node: string }
  | { readonly type: 'dead-letter'; readonly letter: DeadLetter }
  | { readonly type: 'excess-events'; readonly key: string; readonly excess: number }
  | { readonly type: 'no-stage'; readonly inbox: string; readonly key: string }
  | { readonly type: 'transport-error'; readonly error: Error }
  | { readonly type: 'orphans-dropped'; readonly key: string; readonly events: number }
  /** A heartbeat key held a value this node does not take (malformed, for another node, not authentic, an earlier incarnation): no news. */
  | { readonly type: 'heartbeat-refused'; readonly node: string; readonly reason: string; readonly unauthentic: boolean }
  /** Another incarnation beats under this node's own name. */
  | { readonly type: 'name-conflict'; readonly incarnation: string }
  /** At open: another incarnation's beat holds this node's name; waiting to see whether it is renewed. */
  | { readonly type: 'name-wait'; readonly incarnation: string; readonly waitMs: number }
  | { readonly type: 'send-retry'; readonly inbox: string; readonly error: Error }
  /** A message given up on: its subscription was ended, to be made anew. */
  | { readonly type: 'send-failed'; readonly inbox: string; readonly key: string; readonly error: Error };

/** Counters of what this node refused, for metrics. */
export interface FabricNodeStats {
  /** Asks beyond their subscription's maxDemand. */
  refusedAsks: number;
  /** Heartbeat readings not taken, by reason: malformed, unauthentic, stale. */
  readonly heartbeatsRefused: Map<'malformed' | 'unauthentic' | 'stale', number>;
  /** Events dropped from the hold for consumers that had not subscribed again. */
  orphanEventsDropped: number;
  /** Events and their bytes held now for such consumers. */
  heldEvents: number;
  heldBytes: number;
}

/** One node's status snapshot, published with its heartbeat. */
export interface NodeStatus {
  readonly node: string;
  readonly incarnation: string;
  /** When it was taken, in Unix milliseconds. */
  readonly at: number;
  readonly stages: readonly {
    readonly name: string;
    readonly kind: string;
    readonly eventsIn: number;
    readonly eventsOut: number;
    readonly mailbox: number;
    readonly bufferLength: number;
    /** -1 for unbounded. */
    readonly bufferCapacity: number;
    readonly downstream: readonly { readonly consumer: string; readonly asked: number; readonly sent: number }[];
    readonly upstream: readonly { readonly producer: string; readonly pending: number }[];
  }[];
}

/** Splits an instance address `stage@node`. */
export function splitInstance(instance: string): { stage: string; node: string } {
  const at = instance.lastIndexOf('@');
  return { stage: instance.slice(0, at), node: instance.slice(at + 1) };
}

/**
 * Joins this node's stages to the fabric: proxies for remote producers and
 * consumers, routing of inbound wire messages, heartbeats, and the liveness
 * check that ends subscriptions with a node that died (`noconnection`).
 */
export class FabricNode extends EventEmitter<{ event: [FabricEvent] }> implements RemoteProducerHost {
  readonly node: string;
  readonly transport: Transport;
  readonly incarnation = randomUUID();
  private readonly system: StageSystem;
  private readonly clock: Clock;
  private readonly heartbeatMs: number;
  private readonly missedBeats: number;
  private readonly producers = new Map<string, RemoteProducer>();
  private readonly byKey = new Map<string, RemoteProducer>();
  private readonly consumers = new Map<string, RemoteConsumer>();
  private readonly orphans = new Map<string, HeldEntry[]>();
  private readonly maxOrphanEvents: number;
  private readonly maxOrphanBytes: number;
  /** When events for each held key were first held, for dropping those no subscription of this node will take. */
  private readonly heldSince = new Map<string, number>();
  /** The beat last taken of each remote node this node exchanges subscriptions with, and when it was read. */
  private readonly accepted = new Map<string, { beat: Heartbeat; readAtMs: number }>();
  /** Control messages per subscription key, held while the subscriber's liveness is checked (in order, behind its subscribe). */
  private readonly admitting = new Map<string, InboundEntry[]>();
  readonly stats: FabricNodeStats = {
    refusedAsks: 0,
    heartbeatsRefused: new Map(),
    orphanEventsDropped: 0,
    heldEvents: 0,
    heldBytes: 0,
  };
  private booting = true;
  private readonly deferred: InboundEntry[] = [];
  private timer: TimerHandle | undefined;
  private epochCounter = 0;
  private lastEpoch = 0;
  private closed = false;
  private readonly audit: ((records: readonly DemandRecord[]) => void) | undefined;
  private ended: DemandRecord[] = [];
  /** When this node last beat, by its own clock. */
  lastBeatAtMs: number | undefined;

  constructor(options: FabricNodeOptions) {
    super();
    this.node = checkName('node', options.node);
    this.transport = options.transport;
    this.system = options.system;
    this.clock = options.clock ?? options.system.clock;
    this.heartbeatMs = options.heartbeatMs ?? FABRIC_DEFAULTS.heartbeatMs;
    this.missedBeats = options.missedBeats ?? FABRIC_DEFAULTS.missedBeats;
    this.maxOrphanEvents = options.maxOrphanEvents ?? FABRIC_DEFAULTS.maxOrphanEvents;
    this.maxOrphanBytes = options.maxOrphanBytes ?? FABRIC_DEFAULTS.maxOrphanBytes;
    this.audit = options.audit;
    this.transport.on('dead-letter', (letter) => this.emit('event', { type: 'dead-letter', letter }));
    this.transport.on('error', (error) => this.emit('event', { type: 'transport-error', error }));
    this.transport.on('send-retry', ({ inbox, error }) => this.emit('event', { type: 'send-retry', inbox, error }));
    this.transport.on('send-failed', (failure) => this.sendFailed(failure));
  }

  /** For StageSystem's `resolve`: a proxy for a name of the form `stage@node` on another node. */
  readonly resolve = (name: string): StagePeer | undefined => {
    if (!name.includes('@')) return undefined;
    const { node } = splitInstance(name);
    if (node === this.node) return undefined;
    let proxy = this.producers.get(name);
    if (proxy === undefined) {
      proxy = new RemoteProducer(this, name);
      this.producers.set(name, proxy);
    }
    return proxy;
  };

  /**
   * Opens this node's inboxes and starts beating. Entries left from an earlier
   * run are read first: events become orphans for the consumers' new
   * subscriptions; control messages wait until `ready()`, when stages run.
   */
  async open(localInstances: readonly string[]): Promise<void> {
    await this.claimName();
    this.lastBeatAtMs = this.clock.now();
    // Beat from here on: reading old entries and starting the stages may take longer than a heartbeat lives.
    this.scheduleBeat();
    await this.transport.open(
      localInstances.map((stage) => `${stage}@${this.node}`),
      (entry) => this.route(entry),
    );
  }

  /**
   * Local stages are up: handle the control messages held during boot,
   * latest subscription per key only. The beats of the nodes that
   * subscribed are read first, so every subscribe held is taken (or
   * refused) before the caller lets producers serve demand: a broadcast
   * subscriber sees events from the start.
   */
  async ready(): Promise<void> {
    const latest = new Map<string, number>();
    const subscribers = new Set<string>();
    for (const { message } of this.deferred)
      if (message.t === 'subscribe') {
        latest.set(message.key, Math.max(latest.get(message.key) ?? 0, message.epoch));
        subscribers.add(splitInstance(message.consumer).node);
      }
    if (subscribers.size > 0) {
      const readings = await this.transport.heartbeats([...subscribers]).catch(() => new Map<string, HeartbeatReading>());
      for (const node of subscribers) this.observe(node, readings.get(node));
    }
    this.booting = false;
    for (const entry of this.deferred.splice(0)) {
      const newest = latest.get(entry.message.key);
      if (newest !== undefined && entry.message.epoch < newest) this.transport.ack(entry.inbox, [entry.entryId]);
      else this.route(entry);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.transport.close();
  }

  /** The next beat comes a period after this one ended, so a slow Redis never has beats pile up. */
  private scheduleBeat(): void {
    if (this.closed) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      void this.tick().finally(() => this.scheduleBeat());
    }, this.heartbeatMs);
  }

  /**
   * Takes this node's name: its first beat is written only where no beat is.
   * Another incarnation's beat may be that of this node's previous run
   * (killed within its heartbeat's life): it is waited out, once, for as
   * long as it lives. Renewed meanwhile, it is a live node with this name,
   * and opening fails with SF_NODE_NAME_TAKEN: two nodes under one name
   * would read each other's inboxes.
   */
  private async claimName(): Promise<void> {
    const ttl = this.heartbeatMs * this.missedBeats;
    let first: { beat: Heartbeat; deadlineMs: number } | undefined;
    for (;;) {
      if (await this.transport.beat(this.node, this.incarnation, ttl, undefined, { onlyIfAbsent: true })) return;
      const reading = (await this.transport.heartbeats([this.node])).get(this.node);
      if (reading === undefined) continue;
      if (isRefused(reading) || (first !== undefined && this.clock.now() > first.deadlineMs)) {
        // Not a beat of a node this one can know (garbage, unauthentic), or one nobody renewed for longer than it said it lives.
        await this.transport.beat(this.node, this.incarnation, ttl);
        return;
      }
      if (first === undefined) {
        first = { beat: reading, deadlineMs: this.clock.now() + reading.ttlMs + this.heartbeatMs };
        this.emit('event', { type: 'name-wait', incarnation: reading.incarnation, waitMs: reading.ttlMs });
      } else if (reading.incarnation !== first.beat.incarnation || reading.atMs !== first.beat.atMs) {
        throw new FabricError(
          'SF_NODE_NAME_TAKEN',
          `node name "${this.node}" is taken: a live node beats under it (incarnation ${reading.incarnation}, started ${new Date(reading.startedAtMs).toISOString()}); give this node another name, or stop the other one first`,
        );
      }
      await new Promise<void>((resolve) => this.clock.setTimeout(resolve, Math.min(100, Math.max(10, Math.floor(this.heartbeatMs / 4)))));
    }
  }

  // ------------------------------------------------------------ RemoteProducerHost

  nextEpoch(): number {
    // Increases across restarts too: time-based, and never repeats within this process.
    this.lastEpoch = Math.max(this.lastEpoch + 1, this.clock.now() * 1000 + (this.epochCounter++ % 1000));
    return this.lastEpoch;
  }

  takeOrphans(key: string): HeldEntry[] {
    const entries = this.orphans.get(key) ?? [];
    this.orphans.delete(key);
    this.heldSince.delete(key);
    for (const e of entries) {
      this.stats.heldEvents -= e.events.length;
      this.stats.heldBytes -= e.bytes;
    }
    return entries;
  }

  /**
   * Holds events no live subscription wants yet, for the consumer's next
   * subscription. Bounded in events and in bytes: past `maxOrphanEvents` or
   * `maxOrphanBytes` the oldest are acknowledged and dropped, and the drop is
   * reported.
   */
  keepOrphans(key: string, entries: HeldEntry[]): void {
    this.orphans.set(key, [...(this.orphans.get(key) ?? []), ...entries]);
    if (!this.heldSince.has(key)) this.heldSince.set(key, this.clock.now());
    for (const e of entries) {
      this.stats.heldEvents += e.events.length;
      this.stats.heldBytes += e.bytes;
    }
    while (this.stats.heldEvents > this.maxOrphanEvents || this.stats.heldBytes > this.maxOrphanBytes) {
      const [oldestKey, held] = this.orphans.entries().next().value as [string, HeldEntry[]];
      const dropped = held.shift() as HeldEntry;
      if (held.length === 0) {
        this.orphans.delete(oldestKey);
        this.heldSince.delete(oldestKey);
      }
      this.stats.heldEvents -= dropped.events.length;
      this.stats.heldBytes -= dropped.bytes;
      this.stats.orphanEventsDropped += dropped.events.length;
      this.transport.ack(dropped.inbox, [dropped.entryId]);
      this.emit('event', { type: 'orphans-dropped', key: oldestKey, events: dropped.events.length });
    }
  }

  releaseOrphan(key: string, entry: HeldEntry): void {
    const held = this.orphans.get(key);
    const i = held?.indexOf(entry) ?? -1;
    if (held === undefined || i < 0) return;
    held.splice(i, 1);
    if (held.length === 0) {
      this.orphans.delete(key);
      this.heldSince.delete(key);
    }
    this.stats.heldEvents -= entry.events.length;
    this.stats.heldBytes -= entry.bytes;
  }

  /**
   * Held events for a key whose producer no consumer of this node subscribes
   * to (its topology changed, or they were forged during boot): once the
   * stages had a heartbeat's life to subscribe, they are dead-lettered.
   */
  private sweepOrphans(): void {
    const ttl = this.heartbeatMs * this.missedBeats;
    for (const [key, since] of [...this.heldSince]) {
      const producer = splitKey(key)?.producer;
      if (this.clock.now() - since < ttl || (producer !== undefined && this.producers.has(producer))) continue;
      for (const e of this.takeOrphans(key)) {
        this.transport.deadLetter(
          {
            inbox: e.inbox,
            entryId: e.entryId,
            bytes: e.bytes,
            message: { t: 'events', key, epoch: 0, seq: 0, events: e.events.slice(0, 1) },
          },
          'refused',
          `events for ${key}: no stage of this node subscribes to ${producer}`,
        );
      }
    }
  }

  register(key: string, proxy: RemoteProducer): void {
    this.byKey.set(key, proxy);
  }

  unregister(key: string): void {
    this.byKey.delete(key);
  }

  subscriptionEnded(record: DemandRecord): void {
    if (this.audit !== undefined) this.ended.push(record);
  }

  reportExcess(key: string, excess: number): void {
    this.emit('event', { type: 'excess-events', key, excess });
  }

  // ------------------------------------------------------------ inbound

  private route(entry: InboundEntry): void {
    const { message, inbox, entryId } = entry;
    const toConsumer = message.t === 'events' || (message.t === 'cancel' && message.from === 'producer');
    // A key names one consumer and one producer: a message must come through the inbox of the one it is for.
    const parts = splitKey(message.key);
    if (parts === undefined || (toConsumer ? parts.consumer : parts.producer) !== inbox) {
      this.transport.deadLetter(entry, 'refused', `subscription ${message.key} does not concern ${inbox}, whose inbox it came through`);
      return;
    }
    if (toConsumer) {
      const proxy = this.byKey.get(message.key);
      const outcome = proxy?.receive(message, inbox, entryId, entry.bytes) ?? 'unknown';
      if (outcome === 'done') this.transport.ack(inbox, [entryId]);
      else if (outcome === 'unknown') {
        if (!this.booting && !this.producers.has(parts.producer)) {
          // No stage of this node subscribes to that producer: nothing would ever take them.
          this.transport.deadLetter(
            entry,
            'refused',
            `${message.t} for ${message.key}: no stage of this node subscribes to ${parts.producer}`,
          );
        } else if (message.t === 'events') {
          // No live subscription: keep unhandled events for the consumer's next one (it restarts and resubscribes).
          this.keepOrphans(message.key, [{ inbox, entryId, events: message.events, delivered: 0, handled: 0, bytes: entry.bytes }]);
        } else this.transport.ack(inbox, [entryId]);
      }
      return;
    }
    if (this.booting) {
      this.deferred.push(entry);
      return;
    }
    this.toProducerEntry(entry);
  }

  /**
   * A message for a local producer. A subscribe is taken only from a node
   * whose beat says it is alive, as the incarnation that subscribed: when
   * this node has not read that beat, the subscribe (and what follows it for
   * the same key) waits for one read.
   */
  private toProducerEntry(entry: InboundEntry): void {
    const { message } = entry;
    const held = this.admitting.get(message.key);
    if (held !== undefined) {
      held.push(entry);
      return;
    }
    if (message.t === 'subscribe' && !this.isAlive(splitInstance(message.consumer).node, message.incarnation)) {
      this.admitting.set(message.key, [entry]);
      void this.admit(message.key, splitInstance(message.consumer).node);
      return;
    }
    this.toProducer(entry);
  }

  private isAlive(node: string, incarnation: string): boolean {
    const known = this.accepted.get(node);
    return (
      known !== undefined &&
      known.beat.incarnation === incarnation &&
      this.clock.now() - known.readAtMs < this.heartbeatMs * this.missedBeats
    );
  }

  /** Reads the beat of a subscriber's node, then handles what waited for it: a subscribe from a node not alive is refused. */
  private async admit(key: string, node: string): Promise<void> {
    let reading: HeartbeatReading | undefined;
    try {
      reading = (await this.transport.heartbeats([node])).get(node);
    } catch (error) {
      this.emit('event', { type: 'transport-error', error: error as Error });
      if (!this.closed) this.clock.setTimeout(() => void this.admit(key, node), this.heartbeatMs);
      return;
    }
    if (this.closed) return;
    this.observe(node, reading);
    const entries = this.admitting.get(key) ?? [];
    this.admitting.delete(key);
    for (const entry of entries) {
      const { message } = entry;
      if (message.t === 'subscribe' && !this.isAlive(node, message.incarnation)) {
        const why =
          reading === undefined
            ? 'it has no heartbeat'
            : isRefused(reading)
              ? `its heartbeat was refused (${reading.refused})`
              : `the incarnation beating is ${reading.incarnation}, not ${message.incarnation}`;
        this.transport.deadLetter(entry, 'refused', `subscribe from ${message.consumer}: node ${node} is not alive (${why})`);
      } else this.toProducerEntry(entry);
    }
  }

  private toProducer(entry: InboundEntry): void {
    const { inbox, message } = entry;
    const existing = this.consumers.get(message.key);
    if (message.t !== 'subscribe') {
      if (existing === undefined) {
        // A late message for a subscription that ended, from a node still alive, is harmless; from anyone else it is refused.
        const node = splitInstance(splitKey(message.key)?.consumer ?? '@').node;
        if (this.accepted.has(node)) this.transport.ack(inbox, [entry.entryId]);
        else
          this.transport.deadLetter(
            entry,
            'refused',
            `${message.t} for ${message.key}: no such subscription, and node ${node} is not alive`,
          );
        return;
      }
      const refusal = existing.receive(message);
      if (refusal === undefined) {
        // Control messages are idempotent (cumulative asks, epochs): acknowledged once applied.
        this.transport.ack(inbox, [entry.entryId]);
        return;
      }
      if (message.t === 'ask') this.stats.refusedAsks++;
      this.transport.deadLetter(entry, 'refused', refusal);
      return;
    }
    this.transport.ack(inbox, [entry.entryId]);
    if (existing !== undefined) {
      if (existing.epoch >= message.epoch) return;
      existing.drop('resubscribed');
    }
    const { stage } = splitInstance(inbox);
    const producer = this.system.local(stage);
    if (producer === undefined || !producer.alive) {
      this.transport.send(message.consumer, {
        t: 'cancel',
        key: message.key,
        epoch: message.epoch,
        from: 'producer',
        kind: 'down',
        reason: toWireReason('noproc'),
      });
      this.emit('event', { type: 'no-stage', inbox, key: message.key });
      return;
    }
    const id = this.system.nextSubscriptionId();
    const proxy = new RemoteConsumer(
      this.transport,
      message.key,
      message.epoch,
      message.consumer,
      message.incarnation,
      producer,
      id,
      (p) => {
        if (this.consumers.get(p.key) === p) this.consumers.delete(p.key);
      },
      message.options.maxDemand ?? SUBSCRIPTION_DEFAULTS.maxDemand,
    );
    this.consumers.set(message.key, proxy);
    producer.deliver({
      t: 'subscribe',
      subscription: { id, producer, consumer: proxy },
      consumer: proxy,
      options: { ...message.options, to: stage },
    });
  }

  // ------------------------------------------------------------ liveness

  private async tick(): Promise<void> {
    if (this.closed) return;
    if (this.audit !== undefined) {
      const records = [...this.producers.values()].flatMap((p) => p.demand());
      records.push(...this.ended.splice(0));
      for (const ref of this.system.list()) {
        for (const d of this.system.stats(ref).downstream) {
          records.push({ side: 'producer', key: `${d.consumer}<${ref.label}@${this.node}`, epoch: d.id, asked: d.asked, received: d.sent });
        }
      }
      this.audit(records);
    }
    try {
      const ttl = this.heartbeatMs * this.missedBeats;
      await this.transport.beat(this.node, this.incarnation, ttl, JSON.stringify(this.snapshot()));
      const previousBeat = this.lastBeatAtMs;
      this.lastBeatAtMs = this.clock.now();
      const peers = new Set<string>();
      for (const p of this.producers.values()) if (p.subscriptionCount > 0) peers.add(p.node);
      for (const c of this.consumers.values()) peers.add(c.node);
      for (const node of this.accepted.keys()) peers.add(node);
      peers.delete(this.node);
      if (previousBeat !== undefined && this.lastBeatAtMs - previousBeat > ttl) {
        // This node was cut off or stalled longer than its heartbeat lives: its peers have counted it dead and
        // ended its subscriptions on their side. End them here too, so its consumers subscribe again.
        this.emit('event', { type: 'cut-off', silentMs: this.lastBeatAtMs - previousBeat });
        for (const node of peers) this.nodeDown(node, 'this-node-cut-off');
        this.accepted.clear();
        return;
      }
      const readings = await this.transport.heartbeats([...peers, this.node]);
      for (const node of peers) this.observe(node, readings.get(node));
      const own = readings.get(this.node);
      if (own !== undefined && !isRefused(own) && own.incarnation !== this.incarnation) {
        this.emit('event', { type: 'name-conflict', incarnation: own.incarnation });
      }
      // A subscription lives while its consumer's node beats as the incarnation that made it, whether or not this node ever saw it alive.
      for (const c of [...this.consumers.values()]) {
        if (this.accepted.get(c.node)?.beat.incarnation === c.consumerIncarnation) continue;
        if (!this.accepted.has(c.node)) this.emit('event', { type: 'node-down', node: c.node, reason: 'not-alive' });
        c.drop('noconnection');
      }
      this.sweepOrphans();
    } catch (error) {
      this.emit('event', { type: 'transport-error', error: error as Error });
    }
  }

  /** What `stagectl status` shows of this node: its stages and their subscriptions, as of this beat. */
  snapshot(): NodeStatus {
    return {
      node: this.node,
      incarnation: this.incarnation,
      at: this.clock.now(),
      stages: this.system.list().map((ref) => {
        const s = this.system.stats(ref);
        return {
          name: s.ref.label,
          kind: s.kind,
          eventsIn: s.eventsIn,
          eventsOut: s.eventsOut,
          mailbox: s.mailbox,
          bufferLength: s.bufferLength,
          bufferCapacity: Number.isFinite(s.bufferCapacity) ? s.bufferCapacity : -1,
          downstream: s.downstream.map((d) => ({ consumer: d.consumer, asked: d.asked, sent: d.sent })),
          upstream: s.upstream.map((u) => ({ producer: u.producer, pending: u.pending })),
        };
      }),
    };
  }

  /**
   * Takes one reading of a peer's heartbeat key. No key: a node seen alive
   * has died (a node never seen stays awaited). A value this node does not
   * take, or a beat of an earlier incarnation than the one seen, is no news:
   * a stray write never passes for a restart. A beat of a later incarnation
   * is a restart, as is another incarnation's once the one taken has not
   * been read for a heartbeat's life (it was not the node's own).
   */
  private observe(node: string, reading: HeartbeatReading | undefined): void {
    const known = this.accepted.get(node);
    if (reading === undefined) {
      if (known !== undefined) {
        this.accepted.delete(node);
        this.nodeDown(node, 'missed-heartbeats');
      }
      return;
    }
    const refuse = (why: 'malformed' | 'unauthentic' | 'stale', reason: string, unauthentic: boolean) => {
      this.stats.heartbeatsRefused.set(why, (this.stats.heartbeatsRefused.get(why) ?? 0) + 1);
      this.emit('event', { type: 'heartbeat-refused', node, reason, unauthentic });
    };
    if (isRefused(reading)) {
      refuse(reading.unauthentic ? 'unauthentic' : 'malformed', reading.refused, reading.unauthentic);
      return;
    }
    const readAtMs = this.clock.now();
    if (known === undefined) {
      this.accepted.set(node, { beat: reading, readAtMs });
      this.emit('event', { type: 'node-up', node });
    } else if (reading.incarnation === known.beat.incarnation) {
      this.accepted.set(node, { beat: reading, readAtMs });
    } else if (reading.startedAtMs > known.beat.startedAtMs || readAtMs - known.readAtMs > this.heartbeatMs * this.missedBeats) {
      // A later start is a restart; so is any other incarnation once the one taken has not been read for a heartbeat's life.
      this.accepted.set(node, { beat: reading, readAtMs });
      this.nodeDown(node, 'restarted', reading.incarnation);
    } else {
      refuse('stale', `incarnation ${reading.incarnation} started before ${known.beat.incarnation}, the one beating`, false);
    }
  }

  /**
   * A message given up on after its retries: its subscription ends on this
   * side, as if the peer had gone (`noconnection`), and the other side is
   * told; the consumer then subscribes anew, following its cancel mode.
   */
  private sendFailed({ inbox, message, error }: SendFailure): void {
    this.emit('event', { type: 'send-failed', inbox, key: message.key, error });
    const fromConsumer = message.t === 'subscribe' || message.t === 'ask' || (message.t === 'cancel' && message.from === 'consumer');
    if (fromConsumer) this.byKey.get(message.key)?.endSubscription(message.key, message.epoch);
    else if (message.t === 'events') {
      const proxy = this.consumers.get(message.key);
      if (proxy?.epoch === message.epoch) proxy.drop('noconnection', true);
    }
  }

  /** Ends subscriptions with a dead node; after a restart, only those its earlier incarnation made. */
  private nodeDown(node: string, reason: 'missed-heartbeats' | 'restarted' | 'this-node-cut-off', incarnation?: string): void {
    this.emit('event', { type: 'node-down', node, reason });
    for (const p of this.producers.values()) if (p.node === node) p.nodeDown();
    for (const c of [...this.consumers.values()]) {
      // Cut off, this node cannot tell a subscription its peer made before the silence from one made after it
      // (read since this node resumed): each consumer hears of the cancel and subscribes again.
      if (c.node === node && c.consumerIncarnation !== incarnation) c.drop('noconnection', reason === 'this-node-cut-off');
    }
  }
}
