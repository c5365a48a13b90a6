/**
 * The three places where our dispatchers departed from GenStage 1.3 (issue 13),
 * each driven through whole stages so the producer's buffer, its asks and its
 * consumers all take part. Each of these failed before the fix.
 */
import { describe, expect, it } from 'vitest';
import { producer, StageSystem, type Subscription, type SystemEvent } from '../src/index.js';
import { pushProducer, recorder, recordingConsumer } from './fixtures.js';

const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

describe('partition dispatcher: one demand counter for the producer, as GenStage', () => {
  it('a hash that discards every event costs one handleDemand, not a spin', async () => {
    const sys = new StageSystem();
    let calls = 0;
    await sys.start(
      producer<number, number>({
        init: () => ({ state: 0, dispatcher: { type: 'partition', partitions: 2, hash: () => undefined } }),
        handleDemand(demand, next) {
          calls++;
          // A guard so a spinning producer ends the test instead of running forever.
          if (calls > 100) return { stop: 'normal' };
          return { events: range(next, demand), state: next + demand };
        },
      }),
      undefined,
      { name: 'p' },
    );
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', partition: 0, maxDemand: 10 }]), undefined);
    await sys.idle();
    // GenStage: the ask of 10 reaches handleDemand once; discarded events leave the demand waiting.
    expect(calls).toBe(1);
    expect(rec.events()).toEqual([]);
    expect(sys.whereis('p')).toBeDefined();
  });

  it('events beyond what was asked go to the producer buffer, which keeps by bufferKeep and reports what it drops', async () => {
    const sys = new StageSystem();
    const overflows: SystemEvent[] = [];
    sys.on('event', (e) => e.type === 'buffer-overflow' && overflows.push(e));
    await sys.start(
      pushProducer({ dispatcher: { type: 'partition', partitions: 1, hash: () => 0 }, bufferSize: 3, bufferKeep: 'first' }),
      undefined,
      { name: 'p' },
    );
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', partition: 0, maxDemand: 10 }], { manual: true }), undefined);
    await sys.idle();
    const sub = rec.subscriptions[0] as Subscription;
    sys.ask(sub, 2);
    await sys.idle();
    sys.cast('p', ['emit', range(1, 8)]);
    await sys.idle();
    // Two were asked for; of the six beyond, the buffer keeps the first three and reports three dropped.
    expect(rec.batches).toEqual([[1, 2]]);
    expect(overflows).toEqual([{ type: 'buffer-overflow', stage: 'p', dropped: 3, bufferSize: 3, keep: 'first' }]);
    sys.ask(sub, 3);
    await sys.idle();
    expect(rec.batches).toEqual([
      [1, 2],
      [3, 4, 5],
    ]);
  });
});

describe('broadcast dispatcher: a selector does not use up demand, as GenStage', () => {
  it('an automatic consumer whose selector filters most events keeps receiving, and so does everyone else', async () => {
    const sys = new StageSystem();
    await sys.start(
      producer<number, number>({
        // Accumulate until both have subscribed, so both see every event (GenStage's advice for broadcast).
        init: () => ({ state: 0, dispatcher: { type: 'broadcast' }, demand: 'accumulate' }),
        handleDemand(demand, next) {
          const n = Math.max(0, Math.min(demand, 100 - next));
          return { events: range(next, n), state: next + n };
        },
      }),
      undefined,
      { name: 'p' },
    );
    const tens = recorder<number>();
    const all = recorder<number>();
    await sys.start(recordingConsumer(all, [{ to: 'p', maxDemand: 10, minDemand: 5 }]), undefined);
    await sys.start(
      recordingConsumer(tens, [
        { to: 'p', maxDemand: 10, minDemand: 5, selector: ((x: number) => x % 10 === 0) as (event: never) => boolean },
      ]),
      undefined,
    );
    await sys.idle();
    sys.setDemandMode('p', 'forward');
    await sys.idle();
    expect(tens.events()).toEqual(range(0, 10).map((x) => x * 10));
    expect(all.events()).toEqual(range(0, 100));
  });
});

describe('demand dispatcher: demand left by a cancelled subscriber is used up as events are buffered, as GenStage', () => {
  it('a later ask is not cut twice: buffered events are served and the rest is asked of handleDemand', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(pushProducer({ demands }), undefined, { name: 'p' });
    const first = recorder<number>();
    await sys.start(recordingConsumer(first, [{ to: 'p', cancel: 'temporary' }], { manual: true }), undefined, { name: 'first' });
    await sys.idle();
    sys.ask(first.subscriptions[0] as Subscription, 10);
    await sys.idle();
    sys.cancel(first.subscriptions[0] as Subscription, 'done');
    await sys.idle();
    // The producer answers the cancelled ask late: nobody wants these now, so they are buffered.
    sys.cast('p', ['emit', range(0, 10)]);
    await sys.idle();
    const second = recorder<number>();
    await sys.start(recordingConsumer(second, [{ to: 'p' }], { manual: true }), undefined);
    await sys.idle();
    sys.ask(second.subscriptions[0] as Subscription, 20);
    await sys.idle();
    expect(second.events()).toEqual(range(0, 10));
    // GenStage: the buffered 10 used up the pending 10, so the ask of 20 is forwarded whole; 10 come from handleDemand.
    expect(demands).toEqual([10, 10]);
  });
});

describe('broadcast dispatcher: events buffered while nobody subscribes meet the demand forwarded for them (departure)', () => {
  it('a producer that answers late, after its subscriber left: the next subscriber gets the buffered events', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(pushProducer({ demands, dispatcher: { type: 'broadcast' } }), undefined, { name: 'p' });
    const first = recorder<number>();
    await sys.start(recordingConsumer(first, [{ to: 'p', cancel: 'temporary' }], { manual: true }), undefined);
    await sys.idle();
    sys.ask(first.subscriptions[0] as Subscription, 10);
    await sys.idle();
    sys.cancel(first.subscriptions[0] as Subscription, 'done');
    await sys.idle();
    // The answer to that ask of 10 comes now, with no subscriber: it is buffered.
    sys.cast('p', ['emit', range(0, 10)]);
    await sys.idle();
    const second = recorder<number>();
    await sys.start(recordingConsumer(second, [{ to: 'p' }], { manual: true }), undefined);
    await sys.idle();
    sys.ask(second.subscriptions[0] as Subscription, 10);
    await sys.idle();
    // GenStage still counts those 10 as requested and forwards nothing: the buffer is never served.
    expect(second.events()).toEqual(range(0, 10));
    expect(demands).toEqual([10]);
  });
});
