import { describe, expect, it } from 'vitest';
import { Mailbox } from '../src/mailbox.js';

describe('Mailbox', () => {
  it('hands messages out in the order they came, across emptying and compaction', () => {
    const box = new Mailbox<number>();
    const out: number[] = [];
    let next = 0;
    // Bursts of varying size, each partly drained, then fully drained now and then: every path of shift().
    for (let round = 0; round < 200; round++) {
      const burst = (round * 37) % 3000;
      for (let i = 0; i < burst; i++) box.push(next++);
      const take = round % 5 === 0 ? box.length : Math.floor(box.length / 2);
      for (let i = 0; i < take; i++) out.push(box.shift() as number);
    }
    while (box.length > 0) out.push(box.shift() as number);
    expect(out).toEqual(Array.from({ length: next }, (_, i) => i));
    expect(box.shift()).toBeUndefined();
    expect(box.length).toBe(0);
  });

  it('clear returns what was left, in order, and leaves it empty', () => {
    const box = new Mailbox<string>();
    for (const m of ['a', 'b', 'c']) box.push(m);
    box.shift();
    expect(box.clear()).toEqual(['b', 'c']);
    expect(box.length).toBe(0);
    box.push('d');
    expect(box.shift()).toBe('d');
  });
});
