import { describe, expect, it } from 'vitest';
import { BroadcastDispatcher, DemandDispatcher, hashEvent, PartitionDispatcher } from '../src/index.js';

function sink() {
  const sent: [number, unknown[]][] = [];
  return { sent, send: (id: number, events: unknown[]) => sent.push([id, events]) };
}

describe('DemandDispatcher', () => {
  it('sends to the subscriber with the most demand first, ties in subscription order', () => {
    const s = sink();
    const d = new DemandDispatcher<number>(s.send);
    d.subscribe(1, { to: 'p' });
    d.subscribe(2, { to: 'p' });
    expect(d.ask(1, 3)).toBe(3);
    expect(d.ask(2, 5)).toBe(5);
    expect(d.dispatch([1, 2, 3, 4, 5, 6, 7, 8, 9])).toEqual([9]);
    expect(s.sent).toEqual([
      [2, [1, 2, 3, 4, 5]],
      [1, [6, 7, 8]],
    ]);
    expect(d.available()).toBe(0);
  });

  it('splits one batch across subscribers as demand levels out', () => {
    const s = sink();
    const d = new DemandDispatcher<number>(s.send);
    d.subscribe(1, { to: 'p' });
    d.subscribe(2, { to: 'p' });
    d.ask(1, 4);
    d.ask(2, 4);
    d.dispatch([1, 2, 3, 4, 5, 6]);
    expect(s.sent).toEqual([
      [1, [1, 2, 3, 4]],
      [2, [5, 6]],
    ]);
    expect(d.demands()).toEqual(
      new Map([
        [2, 2],
        [1, 0],
      ]),
    );
  });

  it('demand of a cancelled subscriber counts against the next asks, so the producer is not asked twice', () => {
    const d = new DemandDispatcher<number>(() => {});
    d.subscribe(1, { to: 'p' });
    d.subscribe(2, { to: 'p' });
    d.ask(1, 10);
    expect(d.cancel(1)).toBe(0);
    expect(d.ask(2, 4)).toBe(0);
    expect(d.ask(2, 10)).toBe(4);
  });
});

describe('BroadcastDispatcher', () => {
  it('sends every event to every subscriber at the pace of the slowest', () => {
    const s = sink();
    const d = new BroadcastDispatcher<number>(s.send);
    d.subscribe(1, { to: 'p' });
    d.subscribe(2, { to: 'p' });
    expect(d.ask(1, 5)).toBe(0);
    expect(d.ask(2, 3)).toBe(3);
    expect(d.dispatch([1, 2, 3, 4])).toEqual([4]);
    expect(s.sent).toEqual([
      [1, [1, 2, 3]],
      [2, [1, 2, 3]],
    ]);
    expect(d.demands()).toEqual(
      new Map([
        [1, 2],
        [2, 0],
      ]),
    );
    expect(d.ask(2, 2)).toBe(2);
  });

  it('a selector filters what one subscriber receives; filtered events still use its demand', () => {
    const s = sink();
    const d = new BroadcastDispatcher<number>(s.send);
    d.subscribe(1, { to: 'p', selector: ((x: number) => x % 2 === 0) as (e: never) => boolean });
    d.subscribe(2, { to: 'p' });
    d.ask(1, 4);
    d.ask(2, 4);
    d.dispatch([1, 2, 3, 4]);
    expect(s.sent).toEqual([
      [1, [2, 4]],
      [2, [1, 2, 3, 4]],
    ]);
    expect(d.available()).toBe(0);
  });

  it('a late subscriber holds the others back until it asks', () => {
    const s = sink();
    const d = new BroadcastDispatcher<number>(s.send);
    d.subscribe(1, { to: 'p' });
    d.ask(1, 5);
    d.subscribe(2, { to: 'p' });
    expect(d.dispatch([1, 2])).toEqual([1, 2]);
    expect(d.ask(2, 5)).toBe(0);
    expect(d.dispatch([1, 2])).toEqual([]);
    expect(s.sent).toEqual([
      [1, [1, 2]],
      [2, [1, 2]],
    ]);
  });
});

describe('PartitionDispatcher', () => {
  it('routes by hash, each partition within its own demand, and holds the rest per partition', () => {
    const s = sink();
    const d = new PartitionDispatcher<number>([0, 1], (x) => x % 2, 100, s.send);
    d.subscribe(10, { to: 'p', partition: 0 });
    d.subscribe(11, { to: 'p', partition: 1 });
    expect(d.ask(10, 2)).toBe(2);
    expect(d.ask(11, 1)).toBe(1);
    expect(d.dispatch([1, 2, 3, 4, 5, 6])).toEqual([]);
    expect(s.sent).toEqual([
      [11, [1]],
      [10, [2, 4]],
    ]);
    expect(d.held()).toBe(3);
    s.sent.length = 0;
    // Held events are served before the producer is asked for more.
    expect(d.ask(11, 2)).toBe(0);
    expect(s.sent).toEqual([[11, [3, 5]]]);
  });

  it('a hash returning undefined discards the event, and the demand it used is asked for again', () => {
    const s = sink();
    const d = new PartitionDispatcher<number>(['even'], (x) => (x % 2 === 0 ? 'even' : undefined), 100, s.send);
    d.subscribe(1, { to: 'p', partition: 'even' });
    expect(d.ask(1, 2)).toBe(2);
    d.dispatch([1, 2]);
    expect(s.sent).toEqual([[1, [2]]]);
    expect(d.refill()).toBe(1);
  });

  it('rejects an unknown or taken partition with a clear error', () => {
    const d = new PartitionDispatcher<number>([0, 1], undefined, 100, () => {});
    expect(() => d.subscribe(1, { to: 'p', partition: 7 })).toThrow(/partition = 7: must be one of 0, 1/);
    d.subscribe(1, { to: 'p', partition: 0 });
    expect(() => d.subscribe(2, { to: 'p', partition: 0 })).toThrow(/already has a subscriber/);
  });

  it('bounds what it holds per partition and counts what it drops', () => {
    const d = new PartitionDispatcher<number>(
      [0],
      () => 0,
      3,
      () => {},
    );
    d.dispatch([1, 2, 3, 4, 5]);
    expect(d.held()).toBe(3);
    expect(d.takeDropped()).toBe(2);
    expect(d.takeDropped()).toBe(0);
  });

  it('the default hash is stable', () => {
    expect(hashEvent('order-42')).toBe(hashEvent('order-42'));
    expect(hashEvent({ a: 1 })).toBe(hashEvent({ a: 1 }));
    expect(hashEvent('a')).not.toBe(hashEvent('b'));
  });
});
