import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { consumer, producer, producerConsumer, StageSystem, type SystemEvent } from '../src/index.js';

const pause = (turns: number) => (turns === 0 ? undefined : new Promise<void>((r) => setImmediate(r)));

const demandArb = fc.record({ maxDemand: fc.integer({ min: 1, max: 40 }), minFraction: fc.double({ min: 0, max: 0.99, noNaN: true }) });

/** A random stage graph: producers, producer_consumers over them, consumers over both; every producer has a subscriber. */
const graphArb = fc
  .record({
    producers: fc.array(fc.record({ limit: fc.integer({ min: 0, max: 300 }), slow: fc.integer({ min: 0, max: 1 }) }), {
      minLength: 1,
      maxLength: 3,
    }),
    pcs: fc.array(fc.record({ slow: fc.integer({ min: 0, max: 1 }), seed: fc.nat() }), { maxLength: 3 }),
    consumers: fc.array(fc.record({ slow: fc.integer({ min: 0, max: 1 }), seed: fc.nat() }), { minLength: 1, maxLength: 3 }),
    demands: fc.array(demandArb, { minLength: 40, maxLength: 40 }),
  })
  .map((g) => {
    const upstreamNames = g.producers.map((_, i) => `p${i}`);
    // Each producer_consumer takes from one or two producers.
    const pcs = g.pcs.map((pc, i) => ({ ...pc, name: `pc${i}`, from: [upstreamNames[pc.seed % upstreamNames.length] as string] }));
    const sources = [...upstreamNames, ...pcs.map((p) => p.name)];
    const consumers = g.consumers.map((c, i) => ({ ...c, name: `c${i}`, from: [sources[c.seed % sources.length] as string] }));
    // Every source needs a subscriber, or its events could never arrive anywhere.
    const subscribed = new Set([...pcs.flatMap((p) => p.from), ...consumers.flatMap((c) => c.from)]);
    sources.forEach((s, i) => {
      const fallback = consumers[i % consumers.length];
      if (!subscribed.has(s) && fallback !== undefined) fallback.from.push(s);
    });
    return { ...g, pcs, consumers };
  });

describe('demand invariants (property)', () => {
  it('for random graphs, demands and speeds: no subscription gets more than it asked for, no event is lost or duplicated', async () => {
    await fc.assert(
      fc.asyncProperty(graphArb, async (g) => {
        const sys = new StageSystem();
        const problems: SystemEvent[] = [];
        sys.on('event', (e) => {
          if (e.type !== 'stage-exit') problems.push(e);
          else if (!e.clean) problems.push(e);
        });
        let d = 0;
        const nextDemand = () => {
          const x = g.demands[d++ % g.demands.length] as { maxDemand: number; minFraction: number };
          return { maxDemand: x.maxDemand, minDemand: Math.floor(x.maxDemand * x.minFraction) };
        };
        const expected: string[] = [];
        for (const [i, p] of g.producers.entries()) {
          for (let n = 0; n < p.limit; n++) expected.push(`p${i}:${n}`);
          await sys.start(
            producer<number, string>({
              init: () => ({ state: 0 }),
              async handleDemand(demand, next) {
                await pause(p.slow);
                const count = Math.min(demand, p.limit - next);
                return { events: Array.from({ length: count }, (_, k) => `p${i}:${next + k}`), state: next + count };
              },
            }),
            undefined,
            { name: `p${i}` },
          );
        }
        for (const pc of g.pcs) {
          await sys.start(
            producerConsumer<null, string, string>({
              init: () => ({ state: null, subscribeTo: pc.from.map((to) => ({ to, ...nextDemand() })) }),
              async handleEvents(events) {
                await pause(pc.slow);
                return { events };
              },
            }),
            undefined,
            { name: pc.name },
          );
        }
        const received: string[] = [];
        for (const c of g.consumers) {
          await sys.start(
            consumer<null, string>({
              init: () => ({ state: null, subscribeTo: c.from.map((to) => ({ to, ...nextDemand() })) }),
              async handleEvents(events) {
                await pause(c.slow);
                received.push(...events);
              },
            }),
            undefined,
            { name: c.name },
          );
        }
        await sys.idle();
        for (const stage of sys.list()) {
          for (const link of sys.stats(stage).downstream) expect(link.sent).toBeLessThanOrEqual(link.asked);
        }
        expect(problems).toEqual([]);
        expect(received.length).toBe(expected.length);
        expect(new Set(received).size).toBe(received.length);
        expect([...received].sort()).toEqual([...expected].sort());
      }),
      { numRuns: 150 },
    );
  });

  it('per subscription, events arrive in the order the producer emitted them', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 50 }), fc.integer({ min: 0, max: 500 }), async (maxDemand, limit) => {
        const sys = new StageSystem();
        await sys.start(
          producer<number, number>({
            init: () => ({ state: 0 }),
            handleDemand: (demand, next) => {
              const count = Math.min(demand, limit - next);
              return { events: Array.from({ length: count }, (_, k) => next + k), state: next + count };
            },
          }),
          undefined,
          { name: 'p' },
        );
        const got: number[] = [];
        await sys.start(
          consumer<null, number>({
            init: () => ({ state: null, subscribeTo: [{ to: 'p', maxDemand }] }),
            handleEvents: (e) => void got.push(...e),
          }),
          undefined,
        );
        await sys.idle();
        expect(got).toEqual(Array.from({ length: limit }, (_, i) => i));
      }),
      { numRuns: 100 },
    );
  });
});
