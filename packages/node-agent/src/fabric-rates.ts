import type { FabricStatus } from '@stagefabric/fabric';

/** A fabric status as read at a moment, in Unix milliseconds. */
export interface StatusSample {
  readonly at: number;
  readonly status: FabricStatus;
}

export interface StageRate {
  readonly stage: string;
  readonly node: string;
  /** Whether the stage's node beats now. */
  readonly up: boolean;
  readonly kind: string;
  readonly inPerS: number;
  readonly outPerS: number;
  /** Events waiting for this stage: its inbox entries not yet handled, plus its mailbox. */
  readonly backlog: number;
  /** `length/capacity` of a producer's buffer, `length` when unbounded, `-` for a consumer. */
  readonly buffer: string;
}

export interface SubscriptionRate {
  /** `stage@node`. */
  readonly producer: string;
  readonly consumer: string;
  /** Asked for and not yet sent. */
  readonly outstandingDemand: number;
  /** Events the producer sent on it per second. */
  readonly perS: number;
}

export interface FabricRates {
  readonly stages: readonly StageRate[];
  readonly subscriptions: readonly SubscriptionRate[];
  /** `stage@node` of the stage the most work waits on, if any work waits. */
  readonly bottleneck: string | undefined;
}

const perSecond = (now: number, then: number | undefined, seconds: number) => Math.max(0, Math.round((now - (then ?? now)) / seconds));

/**
 * Rates between two status samples and the bottleneck: what `stagectl top`
 * prints and the console draws. A stage or subscription absent from the
 * first sample has rate 0 until the next.
 */
export function fabricRates(before: StatusSample, after: StatusSample): FabricRates {
  const seconds = Math.max(0.001, (after.at - before.at) / 1000);
  const old = new Map<string, FabricStatus['nodes'][number]['stages'][number]>(
    before.status.nodes.flatMap((n) => n.stages.map((s) => [`${s.name}@${n.node}`, s] as const)),
  );
  const oldSent = new Map(before.status.subscriptions.map((s) => [`${s.consumer}->${s.producer}`, s.sent]));
  const inbox = new Map(after.status.inboxes.map((i) => [i.inbox, i.entries]));
  const stages = after.status.nodes.flatMap((n) =>
    n.stages.map((s) => {
      const id = `${s.name}@${n.node}`;
      const prev = old.get(id);
      const rate: StageRate = {
        stage: s.name,
        node: n.node,
        up: n.up,
        kind: s.kind,
        inPerS: perSecond(s.eventsIn, prev?.eventsIn, seconds),
        outPerS: perSecond(s.eventsOut, prev?.eventsOut, seconds),
        backlog: (inbox.get(id) ?? 0) + s.mailbox,
        buffer: s.kind === 'consumer' ? '-' : s.bufferCapacity < 0 ? `${s.bufferLength}` : `${s.bufferLength}/${s.bufferCapacity}`,
      };
      // A stage whose consumers have asked for nothing more: its backlog waits on them, not on it.
      const waitsOnConsumers = s.downstream.length > 0 && s.downstream.every((d) => d.asked <= d.sent);
      return { rate, waitsOnConsumers };
    }),
  );
  // The bottleneck is where work waits: the consumer-side stage with the largest backlog that is not itself waiting on its consumers.
  const candidates = stages
    .filter((x) => x.rate.kind !== 'producer' && x.rate.backlog > 0 && !x.waitsOnConsumers)
    .map((x) => x.rate)
    .sort((a, b) => b.backlog - a.backlog);
  const top = candidates[0];
  return {
    stages: stages.map((x) => x.rate),
    subscriptions: after.status.subscriptions.map((s) => ({
      producer: s.producer,
      consumer: s.consumer,
      outstandingDemand: s.outstandingDemand,
      perS: perSecond(s.sent, oldSent.get(`${s.consumer}->${s.producer}`), seconds),
    })),
    bottleneck: top === undefined ? undefined : `${top.stage}@${top.node}`,
  };
}
