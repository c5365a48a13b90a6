/**
 * Ported from GenStage's test/gen_stage/broadcast_dispatcher_test.exs
 * (elixir-lang/gen_stage at 72198f86c8cd4ba149e8ee2ad80ab442d6d106be).
 *
 * GenStage asserts the state tuple {demands, waiting, requested, subscribers};
 * `state()` below reads the same: each subscription's demand beyond the
 * shared `waiting` (in subscription order, GenStage's list is newest first),
 * `waiting` and `requested`. GenStage's refs and pids are the numbers 1, 2, 3.
 * The ask a selector makes on a subscription's behalf is a reask here.
 */
import { describe, expect, it } from 'vitest';
import { BroadcastDispatcher } from '../../src/index.js';
import { consumerRef, hostLog } from './upstream.js';

function dispatcher() {
  const log = hostLog<unknown>();
  return { log, d: new BroadcastDispatcher<unknown>(log.host) };
}

function state(d: BroadcastDispatcher<unknown>) {
  return {
    demands: Object.fromEntries([...d.demands()].map(([id, demand]) => [id, demand - d.waiting])),
    waiting: d.waiting,
    requested: d.requested,
  };
}

const sub = (d: BroadcastDispatcher<unknown>, id: number, options: Record<string, unknown> = {}) =>
  d.subscribe(id, { to: 'p', ...options }, consumerRef(id));

describe('GenStage.BroadcastDispatcherTest (broadcast_dispatcher_test.exs)', () => {
  it('subscribes and cancels', () => {
    const { d } = dispatcher();
    expect(sub(d, 1)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 0, requested: 0 });
    expect(d.cancel(1)).toBe(0);
    expect(state(d)).toEqual({ demands: {}, waiting: 0, requested: 0 });
  });

  it('subscribes, asks, and cancels (departure: buffered events meet requested demand)', () => {
    const { d } = dispatcher();
    expect(sub(d, 1)).toBe(0);
    expect(d.ask(1, 10)).toBe(10);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 10, requested: 10 });
    expect(d.cancel(1)).toBe(0);
    expect(state(d)).toEqual({ demands: {}, waiting: 0, requested: 10 });

    // Now attempt to dispatch with no consumers
    expect(d.dispatch([1, 2, 3])).toEqual([1, 2, 3]);
    // GenStage keeps requested at 10; the 3 events going to the buffer met 3 of it.
    expect(state(d)).toEqual({ demands: {}, waiting: 0, requested: 7 });
  });

  it('multiple subscriptions with early demand', () => {
    const { d } = dispatcher();
    expect(sub(d, 1)).toBe(0);
    expect(d.ask(1, 10)).toBe(10);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 10, requested: 10 });

    expect(sub(d, 2)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 10, 2: 0 }, waiting: 0, requested: 10 });

    expect(d.cancel(1)).toBe(0);
    expect(state(d)).toEqual({ demands: { 2: 0 }, waiting: 0, requested: 10 });

    expect(d.ask(2, 10)).toBe(0);
    expect(state(d)).toEqual({ demands: { 2: 0 }, waiting: 10, requested: 10 });
  });

  it('multiple subscriptions with late demand', () => {
    const { d } = dispatcher();
    expect(sub(d, 1)).toBe(0);
    expect(sub(d, 2)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 0, 2: 0 }, waiting: 0, requested: 0 });

    expect(d.ask(1, 10)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 10, 2: 0 }, waiting: 0, requested: 0 });

    expect(d.cancel(2)).toBe(10);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 10, requested: 10 });

    expect(d.ask(1, 10)).toBe(10);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 20, requested: 20 });
  });

  it('subscribes, asks and dispatches to multiple consumers (departure: buffered events meet requested demand)', () => {
    const { d, log } = dispatcher();
    sub(d, 1);
    sub(d, 2);
    expect(d.ask(1, 3)).toBe(0);
    expect(d.ask(2, 2)).toBe(2);
    expect(state(d)).toEqual({ demands: { 1: 1, 2: 0 }, waiting: 2, requested: 2 });

    // One batch fits all
    expect(d.dispatch(['a', 'b'])).toEqual([]);
    expect(state(d)).toEqual({ demands: { 1: 1, 2: 0 }, waiting: 0, requested: 0 });
    expect(log.takeSent()).toEqual([
      [1, ['a', 'b']],
      [2, ['a', 'b']],
    ]);

    // A batch with left-over
    expect(d.ask(2, 2)).toBe(1);
    expect(d.dispatch(['c', 'd'])).toEqual(['d']);
    expect(state(d)).toEqual({ demands: { 1: 0, 2: 1 }, waiting: 0, requested: 0 });
    expect(log.takeSent()).toEqual([
      [1, ['c']],
      [2, ['c']],
    ]);

    // A batch with no demand
    expect(d.dispatch(['d'])).toEqual(['d']);
    expect(state(d)).toEqual({ demands: { 1: 0, 2: 1 }, waiting: 0, requested: 0 });
    expect(log.takeSent()).toEqual([]);

    // Add a late subscriber
    expect(d.ask(1, 1)).toBe(1);
    expect(sub(d, 3)).toBe(0);
    expect(d.dispatch(['d', 'e'])).toEqual(['d', 'e']);
    // GenStage keeps requested at 1, so the ask below forwards 2 and the subscribers wait for a third
    // event the producer already sent to its buffer; here the buffered [d, e] met it.
    expect(state(d)).toEqual({ demands: { 1: 1, 2: 1, 3: 0 }, waiting: 0, requested: 0 });

    // Even out
    expect(d.ask(1, 2)).toBe(0);
    expect(d.ask(2, 2)).toBe(0);
    expect(d.ask(3, 3)).toBe(3);
    expect(d.dispatch(['d', 'e', 'f'])).toEqual([]);
    expect(state(d)).toEqual({ demands: { 1: 0, 2: 0, 3: 0 }, waiting: 0, requested: 0 });
    expect(log.takeSent()).toEqual([
      [1, ['d', 'e', 'f']],
      [2, ['d', 'e', 'f']],
      [3, ['d', 'e', 'f']],
    ]);
  });

  it('subscribes, asks, dispatches, and repeats', () => {
    const { d, log } = dispatcher();
    expect(sub(d, 1)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 0, requested: 0 });

    expect(d.ask(1, 10)).toBe(10);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 10, requested: 10 });

    expect(d.dispatch(['a', 'b', 'c'])).toEqual([]);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 7, requested: 7 });
    expect(log.takeSent()).toEqual([[1, ['a', 'b', 'c']]]);

    expect(sub(d, 2)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 7, 2: 0 }, waiting: 0, requested: 7 });

    expect(d.ask(2, 20)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 0, 2: 13 }, waiting: 7, requested: 7 });

    const seven = ['d', 'e', 'f', 'g', 'h', 'i', 'j'];
    expect(d.dispatch(seven)).toEqual([]);
    expect(state(d)).toEqual({ demands: { 1: 0, 2: 13 }, waiting: 0, requested: 0 });
    expect(log.takeSent()).toEqual([
      [1, seven],
      [2, seven],
    ]);
  });

  it('subscribes, asks, cancels, and dispatcher reuses events for another subscriber', () => {
    const { d, log } = dispatcher();
    expect(sub(d, 1)).toBe(0);
    expect(d.ask(1, 10)).toBe(10);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 10, requested: 10 });

    expect(d.cancel(1)).toBe(0);
    expect(state(d)).toEqual({ demands: {}, waiting: 0, requested: 10 });

    expect(sub(d, 2)).toBe(0);
    expect(state(d)).toEqual({ demands: { 2: 0 }, waiting: 0, requested: 10 });

    expect(d.ask(2, 5)).toBe(0);
    expect(state(d)).toEqual({ demands: { 2: 0 }, waiting: 5, requested: 10 });

    expect(d.dispatch(['a', 'b', 'c'])).toEqual([]);
    expect(state(d)).toEqual({ demands: { 2: 0 }, waiting: 2, requested: 7 });
    expect(log.takeSent()).toEqual([[2, ['a', 'b', 'c']]]);
  });

  it('cancels blocking subscriber while there is already a requested demand', () => {
    const { d } = dispatcher();
    expect(sub(d, 1)).toBe(0);
    expect(d.ask(1, 10)).toBe(10);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 10, requested: 10 });

    expect(sub(d, 2)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 10, 2: 0 }, waiting: 0, requested: 10 });

    expect(d.ask(1, 5)).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 15, 2: 0 }, waiting: 0, requested: 10 });

    expect(d.cancel(2)).toBe(5);
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 15, requested: 15 });
  });

  it('subscribing with a selector function', () => {
    const { d, log } = dispatcher();
    const selector1 = ({ key }: { key: string }) => key.startsWith('pre');
    const selector2 = ({ key }: { key: string }) => key.startsWith('pref');

    expect(sub(d, 1, { selector: selector1 })).toBe(0);
    expect(sub(d, 2, { selector: selector2 })).toBe(0);
    expect(state(d)).toEqual({ demands: { 1: 0, 2: 0 }, waiting: 0, requested: 0 });

    expect(d.ask(2, 4)).toBe(0);
    expect(d.ask(1, 4)).toBe(4);

    const events = [{ key: 'pref-1234' }, { key: 'pref-5678' }, { key: 'pre0000' }, { key: 'foo0000' }];
    expect(d.dispatch(events)).toEqual([]);

    // What each selector filtered out is asked for again on that subscription's behalf.
    expect(log.reasks).toEqual([
      [1, 1],
      [2, 2],
    ]);
    expect(log.takeSent()).toEqual([
      [1, [{ key: 'pref-1234' }, { key: 'pref-5678' }, { key: 'pre0000' }]],
      [2, [{ key: 'pref-1234' }, { key: 'pref-5678' }]],
    ]);
  });

  it('delivers info to current process', () => {
    const { d, log } = dispatcher();
    sub(d, 1);
    sub(d, 2);
    expect(d.ask(1, 3)).toBe(0);
    const before = state(d);
    d.info('hello');
    expect(state(d)).toEqual(before);
    expect(log.infos).toEqual(['hello']);
  });

  it('subscribing is idempotent', () => {
    const { d } = dispatcher();
    const consumer = consumerRef(7);
    expect(d.subscribe(1, { to: 'p' }, consumer)).toBe(0);
    // GenStage logs "already registered" and returns {:error, _}; here the refusal is a FabricError.
    expect(() => d.subscribe(2, { to: 'p' }, consumer)).toThrow(
      expect.objectContaining({ code: 'SF_ALREADY_SUBSCRIBED', message: expect.stringContaining('already subscribed') }),
    );
    expect(state(d)).toEqual({ demands: { 1: 0 }, waiting: 0, requested: 0 });
  });
});
