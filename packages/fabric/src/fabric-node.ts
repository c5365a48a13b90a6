import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Clock, StagePeer, StageSystem, TimerHandle } from '@stagefabric/runtime';
import { RemoteConsumer } from './remote-consumer.js';
import { type DemandRecord, type HeldEntry, RemoteProducer, type RemoteProducerHost } from './remote-producer.js';
import type { DeadLetter, InboundEntry, Transport } from './transport.js';
import { toWireReason, type WireMessage } from './wire.js';

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
  /**
   * Called every heartbeat with what each subscription asked for and
   * received: the remote subscriptions of this node's consumers (live ones,
   * and those that ended since the last call) and every subscriber of this
   * node's producers, so an auditor can check that none ever received more
   * than it asked for.
   */
  readonly audit?: (records: readonly DemandRecord[]) => void;
}

export const FABRIC_DEFAULTS = { heartbeatMs: 1000, missedBeats: 3, maxOrphanEvents: 100_000 } as const;

export type FabricEvent =
  | { readonly type: 'node-down'; readonly node: string; readonly reason: 'missed-heartbeats' | 'restarted' | 'this-node-cut-off' }
  /** This node could not beat for longer than its heartbeat lives (a partition, a stall): its subscriptions were ended. */
  | { readonly type: 'cut-off'; readonly silentMs: number }
  | { readonly type: 'node-up'; readonly node: string }
  | { readonly type: 'dead-letter'; readonly letter: DeadLetter }
  | { readonly type: 'excess-events'; readonly key: string; readonly excess: number }
  | { readonly type: 'no-stage'; readonly inbox: string; readonly key: string }
  | { readonly type: 'transport-error'; readonly error: Error }
  | { readonly type: 'orphans-dropped'; readonly key: string; readonly events: number };

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
  private orphanEvents = 0;
  private readonly maxOrphanEvents: number;
  /** Incarnation last seen per remote node we exchange subscriptions with. */
  private readonly seen = new Map<string, string>();
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
    this.node = options.node;
    this.transport = options.transport;
    this.system = options.system;
    this.clock = options.clock ?? options.system.clock;
    this.heartbeatMs = options.heartbeatMs ?? FABRIC_DEFAULTS.heartbeatMs;
    this.missedBeats = options.missedBeats ?? FABRIC_DEFAULTS.missedBeats;
    this.maxOrphanEvents = options.maxOrphanEvents ?? FABRIC_DEFAULTS.maxOrphanEvents;
    this.audit = options.audit;
    this.transport.on('dead-letter', (letter) => this.emit('event', { type: 'dead-letter', letter }));
    this.transport.on('error', (error) => this.emit('event', { type: 'transport-error', error }));
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
    await this.transport.beat(this.node, this.incarnation, this.heartbeatMs * this.missedBeats);
    this.lastBeatAtMs = this.clock.now();
    // Beat from here on: reading old entries and starting the stages may take longer than a heartbeat lives.
    this.scheduleBeat();
    await this.transport.open(
      localInstances.map((stage) => `${stage}@${this.node}`),
      (entry) => this.route(entry),
    );
  }

  /** Local stages are up: handle the control messages held during boot, latest subscription per key only. */
  ready(): void {
    this.booting = false;
    const latest = new Map<string, number>();
    for (const { message } of this.deferred)
      if (message.t === 'subscribe') latest.set(message.key, Math.max(latest.get(message.key) ?? 0, message.epoch));
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

  // ------------------------------------------------------------ RemoteProducerHost

  nextEpoch(): number {
    // Increases across restarts too: time-based, and never repeats within this process.
    this.lastEpoch = Math.max(this.lastEpoch + 1, this.clock.now() * 1000 + (this.epochCounter++ % 1000));
    return this.lastEpoch;
  }

  takeOrphans(key: string): HeldEntry[] {
    const entries = this.orphans.get(key) ?? [];
    this.orphans.delete(key);
    for (const e of entries) this.orphanEvents -= e.events.length;
    return entries;
  }

  /**
   * Holds events no live subscription wants yet, for the consumer's next
   * subscription. Bounded: past `maxOrphanEvents` the oldest are acknowledged
   * and dropped, and the drop is reported.
   */
  keepOrphans(key: string, entries: HeldEntry[]): void {
    this.orphans.set(key, [...(this.orphans.get(key) ?? []), ...entries]);
    for (const e of entries) this.orphanEvents += e.events.length;
    while (this.orphanEvents > this.maxOrphanEvents) {
      const [oldestKey, held] = this.orphans.entries().next().value as [string, HeldEntry[]];
      const dropped = held.shift() as HeldEntry;
      if (held.length === 0) this.orphans.delete(oldestKey);
      this.orphanEvents -= dropped.events.length;
      this.transport.ack(dropped.inbox, [dropped.entryId]);
      this.emit('event', { type: 'orphans-dropped', key: oldestKey, events: dropped.events.length });
    }
  }

  releaseOrphan(key: string, entry: HeldEntry): void {
    const held = this.orphans.get(key);
    const i = held?.indexOf(entry) ?? -1;
    if (held === undefined || i < 0) return;
    held.splice(i, 1);
    if (held.length === 0) this.orphans.delete(key);
    this.orphanEvents -= entry.events.length;
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
    if (toConsumer) {
      const proxy = this.byKey.get(message.key);
      const outcome = proxy?.receive(message, inbox, entryId) ?? 'unknown';
      if (outcome === 'done') this.transport.ack(inbox, [entryId]);
      else if (outcome === 'unknown') {
        // No live subscription: keep unhandled events for the consumer's next one (it restarts and resubscribes).
        if (message.t === 'events') this.keepOrphans(message.key, [{ inbox, entryId, events: message.events, delivered: 0, handled: 0 }]);
        else this.transport.ack(inbox, [entryId]);
      }
      return;
    }
    if (this.booting) {
      this.deferred.push(entry);
      return;
    }
    this.toProducer(inbox, message);
    // Control messages are idempotent (cumulative asks, epochs): acknowledged once applied.
    this.transport.ack(inbox, [entryId]);
  }

  private toProducer(inbox: string, message: WireMessage): void {
    const existing = this.consumers.get(message.key);
    if (message.t !== 'subscribe') {
      existing?.receive(message);
      return;
    }
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
    );
    this.consumers.set(message.key, proxy);
    this.seen.set(proxy.node, this.seen.get(proxy.node) ?? '');
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
      for (const node of this.seen.keys()) peers.add(node);
      if (previousBeat !== undefined && this.lastBeatAtMs - previousBeat > ttl) {
        // This node was cut off or stalled longer than its heartbeat lives: its peers have counted it dead and
        // ended its subscriptions on their side. End them here too, so its consumers subscribe again.
        this.emit('event', { type: 'cut-off', silentMs: this.lastBeatAtMs - previousBeat });
        for (const node of peers) this.nodeDown(node, 'this-node-cut-off');
        this.seen.clear();
        return;
      }
      const alive = await this.transport.alive([...peers]);
      for (const node of peers) {
        const now = alive.get(node);
        const before = this.seen.get(node);
        if (now === undefined) {
          // Never seen alive: a subscription to it waits. Seen before: it died.
          if (before !== undefined && before !== '') this.nodeDown(node, 'missed-heartbeats');
          this.seen.delete(node);
        } else if (before === undefined || before === '') {
          this.seen.set(node, now);
          if (before === undefined) this.emit('event', { type: 'node-up', node });
        } else if (before !== now) {
          this.nodeDown(node, 'restarted', now);
          this.seen.set(node, now);
        }
      }
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
