import { describe, expect, it } from 'vitest';
import { backoffMs } from '../src/index.js';

describe('backoffMs', () => {
  it('doubles from the base and stops at the cap', () => {
    const bounds = { baseMs: 100, maxMs: 5000 };
    expect([0, 1, 2, 3, 5, 6, 60, 5000].map((a) => backoffMs(a, bounds))).toEqual([100, 200, 400, 800, 3200, 5000, 5000, 5000]);
  });

  it('with jitter, waits a uniform share of the same bound, never NaN however many attempts', () => {
    const bounds = { baseMs: 1000, maxMs: 300_000 };
    expect(backoffMs(3, bounds, () => 0.5)).toBe(4000);
    expect(backoffMs(10_000, bounds, () => 0)).toBe(0);
    expect(backoffMs(10_000, bounds, () => 0.999)).toBe(299_700);
    expect(backoffMs(-1, bounds, () => 0.5)).toBe(500);
  });
});
