import { FabricError } from '@stagefabric/runtime';
import { describe, expect, it } from 'vitest';
import { checkBackoff, retryDelayMs, TaskRegistry } from '../src/index.js';

describe('per-handler backoff', () => {
  it('fixed waits its delay; exponential waits up to base * 2^(attempt-1), capped; a function decides from attempt and error', () => {
    expect(retryDelayMs({ type: 'fixed', delayMs: 5000 }, 3, 'x')).toBe(5000);
    for (let i = 0; i < 50; i++) {
      const ms = retryDelayMs({ type: 'exponential', baseMs: 100, maxMs: 1000 }, 3, 'x');
      expect(ms).toBeGreaterThanOrEqual(0);
      expect(ms).toBeLessThanOrEqual(400);
      expect(retryDelayMs({ type: 'exponential', baseMs: 100, maxMs: 1000 }, 10, 'x')).toBeLessThanOrEqual(1000);
      // No handler backoff: the runner's exponential one.
      expect(retryDelayMs(undefined, 2, 'x', { baseMs: 10, maxMs: 100 })).toBeLessThanOrEqual(20);
    }
    const seen: [number, string][] = [];
    const fn = (attempt: number, error: string) => {
      seen.push([attempt, error]);
      return /rate limited/.test(error) ? 60_000 : attempt * 10;
    };
    expect(retryDelayMs(fn, 2, 'HTTP 429: rate limited')).toBe(60_000);
    expect(retryDelayMs(fn, 3, 'boom')).toBe(30);
    expect(seen).toEqual([
      [2, 'HTTP 429: rate limited'],
      [3, 'boom'],
    ]);
  });

  it('a backoff function that throws or returns no delay gives the runner’s backoff, and says why', () => {
    const problems: string[] = [];
    const fallback = { baseMs: 10, maxMs: 10 };
    expect(
      retryDelayMs(
        () => {
          throw new Error('oops');
        },
        1,
        'x',
        fallback,
        (p) => problems.push(p),
      ),
    ).toBeLessThanOrEqual(10);
    expect(
      retryDelayMs(
        () => Number.NaN,
        1,
        'x',
        fallback,
        (p) => problems.push(p),
      ),
    ).toBeLessThanOrEqual(10);
    expect(
      retryDelayMs(
        () => -5,
        1,
        'x',
        fallback,
        (p) => problems.push(p),
      ),
    ).toBeLessThanOrEqual(10);
    expect(problems).toEqual([
      'threw: oops',
      'returned NaN, not a number of milliseconds from 0 to 2147483647',
      'returned -5, not a number of milliseconds from 0 to 2147483647',
    ]);
  });

  it('a bad backoff is refused at registration, naming the handler and the field; a handlers module sets it on the function', () => {
    const cases: [unknown, RegExp][] = [
      [{ type: 'fixed' }, /task handler "send": backoff.delayMs = undefined: must be a number of milliseconds/],
      [{ type: 'linear' }, /task handler "send": backoff.type = "linear": must be 'fixed' or 'exponential'/],
      [{ type: 'exponential', maxMs: -1 }, /backoff.maxMs = -1/],
      [5, /task handler "send": backoff = 5: must be/],
    ];
    for (const [backoff, message] of cases) {
      expect(() => checkBackoff('send', backoff)).toThrow(message);
      expect(() => new TaskRegistry().register('send', () => {}, { backoff: backoff as never })).toThrow(FabricError);
    }
    const send = Object.assign(async () => {}, { backoff: { type: 'fixed', delayMs: 250 } as const });
    const registry = TaskRegistry.from({ send, plain: async () => {} });
    expect(registry.backoffOf('send')).toEqual({ type: 'fixed', delayMs: 250 });
    expect(registry.backoffOf('plain')).toBeUndefined();
    expect(() => TaskRegistry.from({ bad: Object.assign(async () => {}, { backoff: { type: 'fixed', delayMs: -1 } }) })).toThrow(
      /task handler "bad": backoff.delayMs = -1/,
    );
  });
});
