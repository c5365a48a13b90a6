import { describe, expect, it } from 'vitest';
import { consumer, FakeClock, producer, StageSystem } from '../src/index.js';
import { counter, pushProducer } from './fixtures.js';

async function crashOf(sys: StageSystem, name: string): Promise<Error> {
  let reason: unknown;
  sys.on('event', (e) => {
    if (e.type === 'stage-exit' && e.stage === name) reason = e.reason;
  });
  await sys.idle();
  return reason as Error;
}

describe('bad callback results fail the stage with an error naming stage, callback and value', () => {
  it('events that are not an array', async () => {
    const sys = new StageSystem();
    await sys.start(
      producer<null, number>({
        init: () => ({ state: null }),
        handleDemand: () => ({ events: 'not a list' as unknown as number[] }),
      }),
      undefined,
      { name: 'maker' },
    );
    const crashed = crashOf(sys, 'maker');
    await sys.start(
      consumer({ init: () => ({ state: null, subscribeTo: [{ to: 'maker', cancel: 'temporary' }] }), handleEvents: () => undefined }),
      undefined,
    );
    const error = await crashed;
    expect(error).toMatchObject({ code: 'SF_BAD_RETURN' });
    expect(error.message).toBe('stage maker: handleDemand returned events that are not an array: "not a list"');
  });

  it('a consumer returning events', async () => {
    const sys = new StageSystem();
    await sys.start(counter(), 0, { name: 'p' });
    const crashed = crashOf(sys, 'sink');
    await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'p', maxDemand: 2 }] }),
        handleEvents: (events) => ({ events }) as never,
      }),
      undefined,
      { name: 'sink' },
    );
    const error = await crashed;
    expect(error.message).toBe(
      'stage sink: handleEvents returned 1 events, but a consumer cannot emit events (return { state } or nothing)',
    );
  });

  it('a value that is not a result object, and an unknown key', async () => {
    const sys = new StageSystem();
    await sys.start(pushProducer(), undefined, { name: 'p' });
    const crashed = crashOf(sys, 'typo');
    await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'p', cancel: 'temporary' }] }),
        handleEvents: (events) => ({ event: events }) as never,
      }),
      undefined,
      { name: 'typo' },
    );
    sys.cast('p', ['emit', [1]]);
    expect((await crashed).message).toMatch(
      /^stage typo: handleEvents returned an unknown key `event`; expected an object with `events`, `state`, `stop`/,
    );

    const crashed2 = crashOf(sys, 'tuple');
    await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'p', cancel: 'temporary' }] }),
        handleEvents: () => ['noreply', [], null] as never,
      }),
      undefined,
      { name: 'tuple' },
    );
    sys.cast('p', ['emit', [2]]);
    expect((await crashed2).message).toMatch(/^stage tuple: handleEvents returned \["noreply",\[\],null\]; expected an object/);
  });

  it('init without state, and an option that does not belong to the kind', async () => {
    const sys = new StageSystem();
    await expect(sys.start(producer({ init: () => 42 as never, handleDemand: () => undefined }), undefined, { name: 'x' })).rejects.toThrow(
      'stage x: init returned 42; expected an object with `state`',
    );
    await expect(
      sys.start(consumer({ init: () => ({ state: 1, bufferSize: 3 }) as never, handleEvents: () => undefined }), undefined, { name: 'y' }),
    ).rejects.toThrow('stage y: init returned an unknown key `bufferSize` for a consumer; allowed: state, subscribeTo');
    await expect(
      sys.start(producer({ init: () => ({ state: 1, bufferSize: -1 }), handleDemand: () => undefined }), undefined, { name: 'z' }),
    ).rejects.toThrow('stage z: init: option bufferSize = -1: must be a non-negative integer or Infinity');
    await expect(
      sys
        .start(counter(), 0, { name: 'q' })
        .then(() =>
          sys.start(
            consumer({ init: () => ({ state: 1, subscribeTo: [{ to: 'q', maxDemand: 5, minDemand: 5 }] }), handleEvents: () => undefined }),
            undefined,
            { name: 'w' },
          ),
        ),
    ).rejects.toThrow('stage w: subscribe: option minDemand = 5: must be an integer from 0 to maxDemand - 1 (4)');
  });

  it('a callback that throws stops the stage with the error as cause; the system keeps running', async () => {
    const sys = new StageSystem();
    await sys.start(pushProducer(), undefined, { name: 'p' });
    const crashed = crashOf(sys, 'thrower');
    await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'p', cancel: 'temporary' }] }),
        handleEvents: () => {
          throw new TypeError('cannot read x of undefined');
        },
      }),
      undefined,
      { name: 'thrower' },
    );
    sys.cast('p', ['emit', [1]]);
    const error = await crashed;
    expect(error).toMatchObject({ code: 'SF_CALLBACK_THREW', message: 'stage thrower: handleEvents threw: cannot read x of undefined' });
    expect(error.cause).toBeInstanceOf(TypeError);
    expect(sys.whereis('p')).toBeDefined();
  });
});

describe('call, cast, info and timers', () => {
  it('handleCall replies, or replies later with ctx.reply; state carries across', async () => {
    const sys = new StageSystem();
    const stage = await sys.start(
      producer<{ n: number; waiting: unknown[] }, number>({
        init: () => ({ state: { n: 0, waiting: [] } }),
        handleDemand: () => undefined,
        handleCall(message, from, state, ctx) {
          if (message === 'incr') return { reply: state.n + 1, state: { ...state, n: state.n + 1 } };
          if (message === 'later') return { state: { ...state, waiting: [...state.waiting, from] } };
          if (message === 'release') {
            for (const w of state.waiting) ctx.reply(w as never, 'released');
            return { reply: state.waiting.length, state: { ...state, waiting: [] } };
          }
          return undefined;
        },
      }),
      undefined,
    );
    expect(await sys.call(stage, 'incr')).toBe(1);
    expect(await sys.call(stage, 'incr')).toBe(2);
    const later = sys.call(stage, 'later');
    expect(await sys.call(stage, 'release')).toBe(1);
    expect(await later).toBe('released');
  });

  it('a call with no reply times out on the clock with a retryable error', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    const stage = await sys.start(pushProducer(), undefined, { name: 'mute' });
    const pending = sys.call(stage, 'hello', 100);
    pending.catch(() => {});
    await sys.idle();
    clock.advance(100);
    await expect(pending).rejects.toMatchObject({ code: 'SF_BAD_RETURN' });
    const s2 = await sys.start(
      producer({ init: () => ({ state: null }), handleDemand: () => undefined, handleCall: () => undefined }),
      undefined,
      { name: 'slow' },
    );
    const p2 = sys.call(s2, 'hello', 100);
    p2.catch(() => {});
    await sys.idle();
    clock.advance(99);
    clock.advance(1);
    await expect(p2).rejects.toMatchObject({
      code: 'SF_CALL_TIMEOUT',
      retryable: true,
      message: 'call to stage slow got no reply within 100 ms',
    });
  });

  it('sendAfter delivers to handleInfo when the clock reaches it, and events from handleInfo are dispatched', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    const got: number[] = [];
    await sys.start(
      producer<null, number>({
        init: (_a, ctx) => {
          ctx.sendAfter(1000, 'tick');
          return { state: null };
        },
        handleDemand: () => undefined,
        handleInfo: (message) => (message === 'tick' ? { events: [clock.now()] } : undefined),
      }),
      undefined,
      { name: 'ticker' },
    );
    await sys.start(
      consumer<null, number>({ init: () => ({ state: null, subscribeTo: ['ticker'] }), handleEvents: (e) => void got.push(...e) }),
      undefined,
    );
    await sys.idle();
    expect(got).toEqual([]);
    clock.advance(999);
    await sys.idle();
    expect(got).toEqual([]);
    clock.advance(1);
    await sys.idle();
    expect(got).toEqual([1000]);
  });

  it('cast reaches handleCast in order, after earlier messages', async () => {
    const sys = new StageSystem();
    const seen: unknown[] = [];
    const s = await sys.start(
      producer({ init: () => ({ state: null }), handleDemand: () => undefined, handleCast: (m) => void seen.push(m) }),
      undefined,
    );
    for (let i = 0; i < 5; i++) sys.cast(s, i);
    await sys.idle();
    expect(seen).toEqual([0, 1, 2, 3, 4]);
  });

  it('stage names are unique while the stage runs', async () => {
    const sys = new StageSystem();
    await sys.start(pushProducer(), undefined, { name: 'only' });
    await expect(sys.start(pushProducer(), undefined, { name: 'only' })).rejects.toMatchObject({ code: 'SF_NAME_TAKEN' });
    await sys.stop('only');
    await expect(sys.start(pushProducer(), undefined, { name: 'only' })).resolves.toBeDefined();
  });
});
