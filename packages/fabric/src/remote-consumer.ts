import { type StageMessage, type StagePeer, startSpan } from '@stagefabric/runtime';
import type { Transport } from './transport.js';
import { fromWireReason, toWireReason, type WireMessage } from './wire.js';

let nextProxyId = 2_000_000_000;

/**
 * Stands in, on the producer's node, for a consumer on another node: one per
 * subscription. The local producer dispatches to it as to any subscriber;
 * it carries events (numbered by `seq`) and cancels over the wire, and turns
 * the consumer's cumulative asks back into demand.
 */
export class RemoteConsumer implements StagePeer {
  readonly id = nextProxyId++;
  readonly name: string;
  readonly label: string;
  private active = true;
  /** Everything the consumer asked for this epoch, as last seen. */
  private hwm = 0;
  private nextSeq = 0;

  constructor(
    private readonly transport: Transport,
    readonly key: string,
    readonly epoch: number,
    /** The consumer's instance address (and inbox), `stage@node`. */
    readonly consumerInbox: string,
    /** The incarnation of the consumer's node that subscribed. */
    readonly consumerIncarnation: string,
    readonly producer: StagePeer,
    readonly subscriptionId: number,
    private readonly onEnd: (proxy: RemoteConsumer) => void,
    /** The subscription's maxDemand: the most the consumer may have asked for and not been sent. */
    readonly maxDemand: number,
  ) {
    this.name = consumerInbox;
    this.label = consumerInbox;
  }

  get alive(): boolean {
    return this.active;
  }

  get node(): string {
    return this.consumerInbox.slice(this.consumerInbox.lastIndexOf('@') + 1);
  }

  /** This side's node: the producer's, from the subscription key `consumer@node>stage@node`. */
  private get producerNode(): string {
    return this.key.slice(this.key.lastIndexOf('@') + 1);
  }

  /** Messages from the local producer stage. */
  deliver(message: StageMessage): void {
    if (!this.active) return;
    if (message.t === 'events') {
      const producer = this.key.slice(this.key.indexOf('>') + 1);
      const span = startSpan(`send ${producer}`, {
        kind: 'producer',
        attributes: () => ({
          'messaging.system': 'stagefabric',
          'messaging.operation.type': 'send',
          'messaging.batch.message_count': message.events.length,
          'stagefabric.stage': producer,
          'stagefabric.consumer': this.consumerInbox,
          'stagefabric.node': this.producerNode,
          'stagefabric.seq': this.nextSeq,
        }),
      });
      const { traceparent } = span;
      this.send({
        t: 'events',
        key: this.key,
        epoch: this.epoch,
        seq: this.nextSeq,
        events: message.events,
        ...(traceparent === undefined ? {} : { tp: traceparent }),
      });
      span.end();
      this.nextSeq += message.events.length;
    } else if (message.t === 'cancel-down') {
      this.cancelOnWire(message.info.kind, message.info.reason);
      this.end();
    }
  }

  /**
   * A wire message from the consumer for this subscription; returns why it
   * is refused, if it is: an ask beyond the subscription's maxDemand (demand
   * is bounded by the subscription's own terms, as Reactive Streams asks).
   */
  receive(message: WireMessage): string | undefined {
    if (!this.active || message.epoch !== this.epoch) return undefined;
    if (message.t === 'ask') {
      // Cumulative: a repeated or reordered ask adds nothing.
      const more = message.hwm - this.hwm;
      if (more <= 0) return undefined;
      if (message.hwm - this.nextSeq > this.maxDemand) {
        return `ask of ${message.key} for ${message.hwm - this.nextSeq} events beyond the subscription's maxDemand of ${this.maxDemand} (hwm ${message.hwm}, ${this.nextSeq} sent)`;
      }
      this.hwm = message.hwm;
      this.producer.deliver({ t: 'ask', id: this.subscriptionId, count: more });
    } else if (message.t === 'cancel' && message.from === 'consumer') {
      this.end();
      this.producer.deliver({
        t: 'cancel-up',
        id: this.subscriptionId,
        info: { kind: message.kind, reason: fromWireReason(message.reason) },
      });
    }
    return undefined;
  }

  /**
   * The consumer's node died, or a newer subscription replaced this one.
   * `tellConsumer`: the consumer may still hold this subscription (this node
   * was the one cut off), so it is sent the cancel and subscribes again.
   */
  drop(reason: unknown, tellConsumer = false): void {
    if (!this.active) return;
    if (tellConsumer) this.cancelOnWire('down', reason);
    this.end();
    this.producer.deliver({ t: 'cancel-up', id: this.subscriptionId, info: { kind: 'down', reason } });
  }

  private end(): void {
    this.active = false;
    this.onEnd(this);
  }

  private cancelOnWire(kind: 'cancel' | 'down', reason: unknown): void {
    this.send({ t: 'cancel', key: this.key, epoch: this.epoch, from: 'producer', kind, reason: toWireReason(reason) });
  }

  private send(message: WireMessage): void {
    this.transport.send(this.consumerInbox, message);
  }
}
