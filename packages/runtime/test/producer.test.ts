import { describe, expect, it } from 'vitest';
import { producer, StageSystem, type Subscription, type SystemEvent } from '../src/index.js';
import { counter, pushProducer, recorder, recordingConsumer } from './fixtures.js';

describe('producer buffer', () => {
  async function overflow(keep: 'first' | 'last') {
    const sys = new StageSystem();
    const events: SystemEvent[] = [];
    sys.on('event', (e) => events.push(e));
    await sys.start(pushProducer({ bufferSize: 5, bufferKeep: keep }), undefined, { name: 'p' });
    sys.cast('p', ['emit', [1, 2, 3, 4]]);
    sys.cast('p', ['emit', [5, 6, 7, 8]]);
    await sys.idle();
    const stats = sys.stats('p');
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', maxDemand: 10 }]), undefined);
    await sys.idle();
    return { delivered: rec.events(), stats, overflow: events.filter((e) => e.type === 'buffer-overflow') };
  }

  it('keeps events emitted without demand and delivers them, in order, when demand arrives', async () => {
    const sys = new StageSystem();
    await sys.start(pushProducer(), undefined, { name: 'p' });
    sys.cast('p', ['emit', [1, 2, 3]]);
    sys.cast('p', ['emit', [4, 5]]);
    await sys.idle();
    expect(sys.stats('p').bufferLength).toBe(5);
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', maxDemand: 2, minDemand: 0 }]), undefined);
    await sys.idle();
    expect(rec.batches).toEqual([[1, 2], [3, 4], [5]]);
    expect(sys.stats('p').bufferLength).toBe(0);
  });

  it('bufferKeep last drops the oldest and reports how many', async () => {
    const r = await overflow('last');
    expect(r.stats.bufferLength).toBe(5);
    expect(r.stats.bufferDropped).toBe(3);
    expect(r.overflow).toEqual([{ type: 'buffer-overflow', stage: 'p', dropped: 3, bufferSize: 5, keep: 'last' }]);
    expect(r.delivered).toEqual([4, 5, 6, 7, 8]);
  });

  it('bufferKeep first drops the newest and reports how many', async () => {
    const r = await overflow('first');
    expect(r.overflow).toEqual([{ type: 'buffer-overflow', stage: 'p', dropped: 3, bufferSize: 5, keep: 'first' }]);
    expect(r.delivered).toEqual([1, 2, 3, 4, 5]);
  });

  it('serves buffered events before asking handleDemand for the rest', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(pushProducer({ demands }), undefined, { name: 'p' });
    sys.cast('p', ['emit', [1, 2, 3]]);
    await sys.idle();
    await sys.start(recordingConsumer(recorder(), [{ to: 'p', maxDemand: 10 }]), undefined);
    await sys.idle();
    expect(demands).toEqual([7]);
  });
});

describe('demand mode', () => {
  it('accumulate holds demand without calling handleDemand; forward replays each held demand in order, as GenStage', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(counter({ demands, demand: 'accumulate', limit: 8 }), 0, { name: 'p' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', maxDemand: 4 }]), undefined);
    await sys.start(recordingConsumer(rec, [{ to: 'p', maxDemand: 4 }]), undefined);
    await sys.idle();
    expect(demands).toEqual([]);
    sys.setDemandMode('p', 'forward');
    await sys.idle();
    // GenStage does not combine demands held while accumulating: each reaches handleDemand on its own.
    expect(demands.slice(0, 2)).toEqual([4, 4]);
    expect(rec.events().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('demand mode can be switched at run time: paused demand is released on forward', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(counter({ demands, limit: 100 }), 0, { name: 'p' });
    sys.setDemandMode('p', 'accumulate');
    await sys.idle();
    await sys.start(recordingConsumer(recorder(), [{ to: 'p', maxDemand: 10 }]), undefined);
    await sys.idle();
    expect(demands).toEqual([]);
    sys.setDemandMode('p', 'forward');
    await sys.idle();
    expect(demands.slice(0, 1)).toEqual([10]);
  });

  it('events it made for a consumer that left, held in the buffer, serve the next consumer without shorting what handleDemand is asked', async () => {
    const sys = new StageSystem();
    // Like a producer reading a queue: handleDemand notes what it owes, and the rows arrive later (a cast here).
    await sys.start(
      producer<{ owed: number; next: number }, number, void>({
        init: () => ({ state: { owed: 0, next: 0 } }),
        handleDemand: (demand, state) => ({ state: { ...state, owed: state.owed + demand } }),
        handleCast: (rows, state) => {
          const n = Math.min(rows as number, state.owed);
          return { events: Array.from({ length: n }, (_, i) => state.next + i), state: { owed: state.owed - n, next: state.next + n } };
        },
      }),
      undefined,
      { name: 'p' },
    );
    const first = await sys.start(recordingConsumer(recorder(), [{ to: 'p', maxDemand: 10, cancel: 'temporary' }]), undefined);
    await sys.idle();
    // The first consumer leaves owed 10 events; they arrive once it is gone and wait in the buffer.
    sys.cancel(sys.subscriptionsOf(first)[0] as Subscription);
    await sys.idle();
    sys.cast('p', 4);
    sys.cast('p', 6);
    await sys.idle();
    expect(sys.stats('p').bufferLength).toBe(10);
    // The next consumer asks 30 and asks again only once 25 are in: all 30 must come.
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', maxDemand: 30, minDemand: 5 }]), undefined);
    await sys.idle();
    sys.cast('p', 100);
    await sys.idle();
    expect(rec.events()).toEqual(Array.from({ length: 30 }, (_, i) => i));
  });
});
