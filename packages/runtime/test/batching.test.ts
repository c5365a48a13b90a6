import { describe, expect, it } from 'vitest';
import { producerConsumer, StageSystem } from '../src/index.js';
import { counter, recorder, recordingConsumer } from './fixtures.js';

describe('consumer demand and batching (GenStage split_batches)', () => {
  it('asks maxDemand first, then re-asks in steps of maxDemand - minDemand; batches are at most that size', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(counter({ demands, limit: 20 }), 0, { name: 'counter' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'counter', maxDemand: 10, minDemand: 5 }]), undefined);
    await sys.idle();
    expect(demands).toEqual([10, 5, 5, 5, 5]);
    expect(rec.batches).toEqual([
      [0, 1, 2, 3, 4],
      [5, 6, 7, 8, 9],
      [10, 11, 12, 13, 14],
      [15, 16, 17, 18, 19],
    ]);
  });

  it('defaults to maxDemand 1000 and minDemand 500', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(counter({ demands, limit: 1500 }), 0, { name: 'counter' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, ['counter']), undefined);
    await sys.idle();
    expect(demands.slice(0, 3)).toEqual([1000, 500, 500]);
    expect(rec.batches.map((b) => b.length)).toEqual([500, 500, 500]);
    expect(rec.events()).toEqual(Array.from({ length: 1500 }, (_, i) => i));
  });

  it('with minDemand 0 waits for the whole maxDemand before asking again', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(counter({ demands, limit: 9 }), 0, { name: 'counter' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'counter', maxDemand: 3, minDemand: 0 }]), undefined);
    await sys.idle();
    expect(demands).toEqual([3, 3, 3, 3]);
    expect(rec.batches).toEqual([
      [0, 1, 2],
      [3, 4, 5],
      [6, 7, 8],
    ]);
  });

  it('a producer_consumer handles events only as its consumers ask, and asks upstream as it consumes', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(counter({ demands, limit: 12 }), 0, { name: 'counter' });
    await sys.start(
      producerConsumer<null, number, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'counter', maxDemand: 10 }] }),
        handleEvents: (events) => ({ events: events.map((x) => x * 10) }),
      }),
      undefined,
      { name: 'times10' },
    );
    await sys.idle();
    // No consumer yet: the producer_consumer asked once for its maxDemand and holds what came.
    expect(demands).toEqual([10]);
    expect(sys.stats('times10').eventsOut).toBe(0);

    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'times10', maxDemand: 4, minDemand: 2 }]), undefined);
    await sys.idle();
    expect(rec.batches).toEqual([
      [0, 10],
      [20, 30],
      [40, 50],
      [60, 70],
      [80, 90],
      [100, 110],
    ]);
    // Never more in flight to the consumer than it asked for.
    for (const d of sys.stats('times10').downstream) expect(d.sent).toBeLessThanOrEqual(d.asked);
  });

  it('a producer_consumer that filters everything out keeps consuming instead of stalling', async () => {
    const sys = new StageSystem();
    await sys.start(counter({ limit: 100 }), 0, { name: 'counter' });
    await sys.start(
      producerConsumer<null, number, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'counter', maxDemand: 10 }] }),
        handleEvents: (events) => ({ events: events.filter((x) => x >= 95) }),
      }),
      undefined,
      { name: 'tail' },
    );
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'tail', maxDemand: 4 }]), undefined);
    await sys.idle();
    expect(rec.events()).toEqual([95, 96, 97, 98, 99]);
  });

  it('async callbacks run one message at a time, in order', async () => {
    const sys = new StageSystem();
    await sys.start(counter({ limit: 20 }), 0, { name: 'counter' });
    const seen: number[][] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    await sys.start(
      producerConsumer<null, number, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'counter', maxDemand: 4 }] }),
        async handleEvents(events) {
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          await Promise.resolve();
          seen.push(events);
          inFlight--;
          return { events };
        },
      }),
      undefined,
      { name: 'slow' },
    );
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'slow', maxDemand: 5 }]), undefined);
    await sys.idle();
    expect(maxInFlight).toBe(1);
    expect(rec.events()).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(seen.every((b) => b.length <= 2)).toBe(true);
  });

  it('a producer_consumer whose producer finished hands on everything it holds before it exits', async () => {
    const sys = new StageSystem();
    // The counter stops itself as it emits its last events, while the relay still holds most of them.
    await sys.start(counter({ limit: 30, stopAtLimit: true }), 0, { name: 'counter' });
    await sys.start(
      producerConsumer<null, number, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'counter', maxDemand: 10 }] }),
        handleEvents: (events) => ({ events }),
      }),
      undefined,
      { name: 'relay' },
    );
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'relay', maxDemand: 3, cancel: 'transient' }]), undefined);
    await sys.idle();
    expect(rec.events()).toEqual(Array.from({ length: 30 }, (_, i) => i));
    expect(sys.whereis('relay')).toBeUndefined();
    expect(rec.cancels).toEqual([{ kind: 'down', reason: 'normal' }]);
  });
});
