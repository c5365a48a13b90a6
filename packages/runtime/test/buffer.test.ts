import { describe, expect, it } from 'vitest';
import { EventBuffer } from '../src/index.js';

describe('EventBuffer', () => {
  it('keep first: drops the newest events that do not fit', () => {
    const b = new EventBuffer<number>(5, 'first');
    expect(b.push([1, 2, 3])).toBe(0);
    expect(b.push([4, 5, 6, 7])).toBe(2);
    expect(b.take(10)).toEqual([1, 2, 3, 4, 5]);
    expect(b.dropped).toBe(2);
  });

  it('keep last: drops the oldest events to make room', () => {
    const b = new EventBuffer<number>(5, 'last');
    b.push([1, 2, 3]);
    expect(b.push([4, 5, 6, 7])).toBe(2);
    expect(b.take(10)).toEqual([3, 4, 5, 6, 7]);
  });

  it('keep last with a batch larger than the capacity keeps its tail', () => {
    const b = new EventBuffer<number>(3, 'last');
    b.push([1, 2]);
    expect(b.push([3, 4, 5, 6, 7])).toBe(4);
    expect(b.take(10)).toEqual([5, 6, 7]);
  });

  it('takes across chunks and puts events back at the front in order', () => {
    const b = new EventBuffer<number>(100, 'last');
    b.push([1, 2]);
    b.push([3, 4, 5]);
    expect(b.take(3)).toEqual([1, 2, 3]);
    b.unshift([2, 3]);
    expect(b.length).toBe(4);
    expect(b.take(4)).toEqual([2, 3, 4, 5]);
    expect(b.length).toBe(0);
  });

  it('capacity 0 keeps nothing', () => {
    const b = new EventBuffer<number>(0, 'first');
    expect(b.push([1])).toBe(1);
    const c = new EventBuffer<number>(0, 'last');
    expect(c.push([1, 2])).toBe(2);
    expect(c.length).toBe(0);
  });
});
