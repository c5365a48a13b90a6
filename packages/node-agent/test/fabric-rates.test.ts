import type { FabricStatus } from '@stagefabric/fabric';
import { describe, expect, it } from 'vitest';
import { fabricRates } from '../src/fabric-rates.js';

type Stage = FabricStatus['nodes'][number]['stages'][number];

function stage(name: string, kind: string, eventsIn: number, downstream: Stage['downstream'] = []): Stage {
  return { name, kind, eventsIn, eventsOut: eventsIn, mailbox: 0, bufferLength: 0, bufferCapacity: 10_000, downstream, upstream: [] };
}

/** A producer on a, a producer_consumer on b, a consumer on c; inbox entries per stage. */
function sample(at: number, eventsIn: number, inboxes: Record<string, number>, doubleDownstream: Stage['downstream']) {
  const node = (name: string, stages: Stage[]) => ({ node: name, incarnation: name, at, up: true, lastBeatAgeMs: 0, stages });
  const status: FabricStatus = {
    namespace: 't',
    nodes: [
      node('a', [stage('counter', 'producer', 0, [{ consumer: 'double@b', asked: 1000, sent: 1000 }])]),
      node('b', [stage('double', 'producer_consumer', eventsIn, doubleDownstream)]),
      node('c', [stage('recorder', 'consumer', eventsIn)]),
    ],
    subscriptions: [{ producer: 'counter@a', consumer: 'double@b', asked: 1000, sent: eventsIn, outstandingDemand: 1000 - eventsIn }],
    inboxes: Object.entries(inboxes).map(([inbox, entries]) => ({ inbox, entries, pending: entries })),
    malformed: [],
  };
  return { at, status };
}

describe('fabric rates (stagectl top, the console)', () => {
  it('rates per stage between two samples', () => {
    const { stages } = fabricRates(sample(0, 100, {}, []), sample(2000, 300, {}, []));
    expect(stages.map((r) => [r.stage, r.inPerS])).toEqual([
      ['counter', 0],
      ['double', 100],
      ['recorder', 100],
    ]);
  });

  it('events per second and outstanding demand per subscription', () => {
    const { subscriptions } = fabricRates(sample(0, 100, {}, []), sample(2000, 300, {}, []));
    expect(subscriptions).toEqual([{ producer: 'counter@a', consumer: 'double@b', outstandingDemand: 700, perS: 100 }]);
  });

  it('marks the slow consumer, not the producer_consumer whose backlog waits on its demand', () => {
    // double holds more unhandled entries than recorder, but recorder has asked for nothing more: double waits on it.
    const waiting = [{ consumer: 'recorder@c', asked: 500, sent: 500 }];
    const { bottleneck } = fabricRates(sample(0, 0, {}, waiting), sample(1000, 10, { 'double@b': 40, 'recorder@c': 3 }, waiting));
    expect(bottleneck).toBe('recorder@c');
  });

  it('marks the producer_consumer when its consumers wait for events it has not produced', () => {
    const asking = [{ consumer: 'recorder@c', asked: 510, sent: 500 }];
    const { bottleneck } = fabricRates(sample(0, 0, {}, asking), sample(1000, 10, { 'double@b': 40, 'recorder@c': 3 }, asking));
    expect(bottleneck).toBe('double@b');
  });
});
