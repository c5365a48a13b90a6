import { describe, expect, it } from 'vitest';
import { consumer, FakeClock, producer, StageSystem, Supervisor, type SupervisorEvent } from '../src/index.js';
import { counter } from './fixtures.js';

/** A counter producer that crashes when it reaches `crashAt`, once per process-wide flag. */
function fragileCounter(crashes: { left: number }, crashAt: number) {
  return producer<number, number, void>({
    init: () => ({ state: 0 }),
    handleDemand(demand, next) {
      if (crashes.left > 0 && next >= crashAt) {
        crashes.left--;
        throw new Error('counter crashed');
      }
      return { events: Array.from({ length: demand }, (_, i) => next + i), state: next + demand };
    },
  });
}

describe('Supervisor', () => {
  it('restarts a crashed producer, and its permanent consumer exits and resubscribes to the new one by name', async () => {
    const sys = new StageSystem({ clock: new FakeClock() });
    const seen: number[] = [];
    const crashes = { left: 1 };
    const sup = await Supervisor.start(sys, [
      { id: 'counter', name: 'counter', spec: fragileCounter(crashes, 20) },
      {
        id: 'printer',
        spec: consumer<null, number>({
          init: () => ({ state: null, subscribeTo: [{ to: 'counter', maxDemand: 10 }] }),
          handleEvents(events) {
            seen.push(...events);
            if (seen.length >= 40) return { stop: 'normal' };
          },
        }),
        restart: 'transient',
      },
    ]);
    await sys.idle();
    await sup.settled();
    await sys.idle();
    // Events before the crash, then the restarted counter from 0 again.
    expect(seen.slice(0, 20)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(seen.slice(20, 25)).toEqual([0, 1, 2, 3, 4]);
    expect(sup.list().map((c) => [c.id, c.restarts])).toEqual([
      ['counter', 1],
      ['printer', 1],
    ]);
  });

  it('gives up past maxRestarts within maxSeconds and stops every child', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    const crashes = { left: 100 };
    const sup = await Supervisor.start(
      sys,
      [
        { id: 'counter', name: 'counter', spec: fragileCounter(crashes, 0) },
        { id: 'sink', spec: consumer<null, number>({ init: () => ({ state: null }), handleEvents: () => undefined }) },
      ],
      { maxRestarts: 2, maxSeconds: 5 },
    );
    const gaveUp = new Promise<SupervisorEvent>((resolve) => sup.on('event', (e) => e.type === 'gave-up' && resolve(e)));
    await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'counter', cancel: 'temporary' }] }),
        handleEvents: () => undefined,
      }),
      undefined,
      {
        name: 'poker',
      },
    );
    // Each restart, poke the new counter with a fresh subscription so it crashes again.
    for (let i = 0; i < 3; i++) {
      await sys.idle();
      await sup.settled();
      if (sys.whereis('counter')) await sys.subscribe('poker', { to: 'counter', cancel: 'temporary' });
    }
    const event = await gaveUp;
    expect(event).toMatchObject({ type: 'gave-up' });
    expect(sup.error?.code).toBe('SF_RESTART_INTENSITY');
    expect(sup.error?.message).toBe('supervisor gave up: child counter needed more than 2 restarts in 5 s');
    expect(sup.list().every((c) => c.ref === undefined)).toBe(true);
  });

  it('restarts spread beyond maxSeconds are allowed', async () => {
    const clock = new FakeClock();
    const sys = new StageSystem({ clock });
    const sup = await Supervisor.start(sys, [{ id: 'c', name: 'c', spec: counter(), args: 0 }], { maxRestarts: 1, maxSeconds: 1 });
    for (let i = 0; i < 3; i++) {
      await sys.stop('c', new Error('crash'));
      await sup.settled();
      clock.advance(1500);
    }
    expect(sup.error).toBeUndefined();
    expect(sup.list()[0]?.restarts).toBe(3);
    expect(sys.whereis('c')).toBeDefined();
  });

  it('does not restart temporary children, nor transient ones that exit cleanly', async () => {
    const sys = new StageSystem({ clock: new FakeClock() });
    const sup = await Supervisor.start(sys, [
      { id: 't', name: 't', spec: counter(), args: 0, restart: 'transient' },
      { id: 'x', name: 'x', spec: counter(), args: 0, restart: 'temporary' },
    ]);
    await sys.stop('t', 'normal');
    await sys.stop('x', new Error('crash'));
    await sup.settled();
    expect(sys.whereis('t')).toBeUndefined();
    expect(sys.whereis('x')).toBeUndefined();
    await sup.stop();
  });
});
