import { describe, expect, it } from 'vitest';
import { consumer, producer, StageSystem } from '../src/index.js';

describe('stages and the event loop', () => {
  it('a busy pipeline still lets the event loop turn (timers, sockets) while it runs', async () => {
    const sys = new StageSystem();
    const total = 100_000;
    const p = await sys.start(
      producer<number, number>({
        init: () => ({ state: 0 }),
        handleDemand(demand, next) {
          const n = Math.max(0, Math.min(demand, total - next));
          return { events: Array.from({ length: n }, (_, i) => next + i), state: next + n };
        },
      }),
      undefined,
    );
    let received = 0;
    await sys.start(
      consumer<null, number>({
        // One event per round trip: the stages hand work back and forth as fast as they can.
        init: () => ({ state: null, subscribeTo: [{ to: p, maxDemand: 1, minDemand: 0 }] }),
        handleEvents(events) {
          received += events.length;
        },
      }),
      undefined,
    );
    // Resolves only when the event loop gets a turn: that must happen long before the pipeline is done.
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(received).toBeGreaterThan(0);
    expect(received).toBeLessThan(total);
    await sys.idle();
    expect(received).toBe(total);
  });
});
