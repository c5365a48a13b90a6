import { describe, expect, it } from 'vitest';
import { statusSample as sample } from '../../../test/support/fabric-status-sample.js';
import { fabricRates } from '../src/fabric-rates.js';

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
