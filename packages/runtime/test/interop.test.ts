import { describe, expect, it } from 'vitest';
import { fromIterable, pipeline, producer, producerConsumer, StageSystem, toAsyncIterable } from '../src/index.js';
import { counter, recorder, recordingConsumer } from './fixtures.js';

describe('interop', () => {
  it('fromIterable pulls only what is asked and stops with normal when the source ends', async () => {
    const sys = new StageSystem();
    let pulled = 0;
    function* source() {
      for (let i = 0; i < 10; i++) {
        pulled++;
        yield i;
      }
    }
    await sys.start(fromIterable(source()), undefined, { name: 'src' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'src', maxDemand: 4, cancel: 'transient' }], { manual: true }), undefined);
    await sys.idle();
    expect(pulled).toBe(0);
    sys.ask(rec.subscriptions[0]!, 3);
    await sys.idle();
    expect(pulled).toBe(3);
    sys.ask(rec.subscriptions[0]!, 100);
    await sys.idle();
    expect(rec.events()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(sys.whereis('src')).toBeUndefined();
    expect(rec.cancels).toEqual([{ kind: 'down', reason: 'normal' }]);
  });

  it('fromIterable takes async iterables', async () => {
    const sys = new StageSystem();
    async function* source() {
      for (let i = 0; i < 5; i++) yield await Promise.resolve(i * i);
    }
    await sys.start(fromIterable(source()), undefined, { name: 'src' });
    const out: number[] = [];
    for await (const x of toAsyncIterable<number>(sys, ['src'], { maxDemand: 2 })) out.push(x);
    expect(out).toEqual([0, 1, 4, 9, 16]);
  });

  it('toAsyncIterable keeps at most maxDemand events in hand and cancels when the loop breaks', async () => {
    const sys = new StageSystem();
    await sys.start(counter(), 0, { name: 'p' });
    const out: number[] = [];
    for await (const x of toAsyncIterable<number>(sys, ['p'], { maxDemand: 10, minDemand: 5 })) {
      out.push(x);
      await sys.idle();
      const p = sys.stats('p').downstream[0];
      if (p !== undefined) expect(p.sent - out.length).toBeLessThanOrEqual(10);
      if (out.length === 23) break;
    }
    await sys.idle();
    expect(out).toEqual(Array.from({ length: 23 }, (_, i) => i));
    expect(sys.stats('p').downstream).toEqual([]);
  });

  it('toAsyncIterable throws when the producer crashes', async () => {
    const sys = new StageSystem();
    await sys.start(
      producer<number, number>({
        init: () => ({ state: 0 }),
        handleDemand: (_d, n) => (n >= 3 ? { stop: new Error('source broke') } : { events: [n], state: n + 1 }),
      }),
      undefined,
      { name: 'flaky' },
    );
    const out: number[] = [];
    await expect(
      (async () => {
        for await (const x of toAsyncIterable<number>(sys, ['flaky'], { maxDemand: 1, minDemand: 0 })) out.push(x);
      })(),
    ).rejects.toThrow('source broke');
    expect(out).toEqual([0, 1, 2]);
  });

  it('pipeline wires a linear chain in one call', async () => {
    const sys = new StageSystem();
    const rec = recorder<number>();
    const refs = await pipeline(sys, [
      { spec: counter({ limit: 6 }), args: 0 },
      {
        spec: producerConsumer<null, number, number>({
          init: () => ({ state: null }),
          handleEvents: (e) => ({ events: e.map((x) => x + 1) }),
        }),
        subscribe: { maxDemand: 2 },
      },
      { spec: recordingConsumer(rec), subscribe: { maxDemand: 3, cancel: 'temporary' } },
    ]);
    await sys.idle();
    expect(refs).toHaveLength(3);
    expect(rec.events()).toEqual([1, 2, 3, 4, 5, 6]);
  });
});
