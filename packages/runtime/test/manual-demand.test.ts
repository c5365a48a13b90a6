import { describe, expect, it } from 'vitest';
import { consumer, StageSystem, type Subscription } from '../src/index.js';
import { counter, recorder, recordingConsumer } from './fixtures.js';

describe('manual demand', () => {
  it('a subscription switched to manual receives nothing until asked, then exactly what it asked for', async () => {
    const sys = new StageSystem();
    const demands: number[] = [];
    await sys.start(counter({ demands }), 0, { name: 'p' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', maxDemand: 10 }], { manual: true }), undefined, { name: 'c' });
    await sys.idle();
    expect(demands).toEqual([]);
    const sub = rec.subscriptions[0] as Subscription;
    sys.ask(sub, 3);
    await sys.idle();
    expect(rec.batches).toEqual([[0, 1, 2]]);
    sys.ask(sub, 2);
    await sys.idle();
    expect(rec.batches).toEqual([
      [0, 1, 2],
      [3, 4],
    ]);
    expect(demands).toEqual([3, 2]);
  });

  it('a consumer can ask from its own callbacks, one event at a time', async () => {
    const sys = new StageSystem();
    await sys.start(counter({ limit: 5 }), 0, { name: 'p' });
    const seen: number[][] = [];
    await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: ['p'] }),
        handleSubscribe(_side, _o, sub, _s, ctx) {
          ctx.ask(sub, 1);
          return { demand: 'manual' };
        },
        handleEvents(events, from, _s, ctx) {
          seen.push(events);
          ctx.ask(from, 1);
        },
      }),
      undefined,
    );
    await sys.idle();
    expect(seen).toEqual([[0], [1], [2], [3], [4]]);
  });

  it('a negative or fractional ask fails the stage with an error naming it', async () => {
    const sys = new StageSystem();
    const exits: unknown[] = [];
    sys.on('event', (e) => e.type === 'stage-exit' && exits.push(e.reason));
    await sys.start(counter(), 0, { name: 'p' });
    await sys
      .start(
        consumer<null, number>({
          init: () => ({ state: null, subscribeTo: ['p'] }),
          handleSubscribe(_side, _o, sub, _s, ctx) {
            ctx.ask(sub, -1);
            return { demand: 'manual' };
          },
          handleEvents: () => undefined,
        }),
        undefined,
        { name: 'greedy' },
      )
      .catch((e: unknown) => exits.push(e));
    await sys.idle();
    expect(sys.whereis('greedy')).toBeUndefined();
    expect(String((exits[0] as Error).message)).toContain('greedy');
    expect(String((exits[0] as Error).message)).toContain('ask(-1)');
  });
});
