/**
 * Ported from GenStage's test/gen_stage/demand_dispatcher_test.exs
 * (elixir-lang/gen_stage at 72198f86c8cd4ba149e8ee2ad80ab442d6d106be).
 *
 * GenStage asserts the dispatcher's state tuple {demands, pending, max, shuffle};
 * here the same facts are read from demands() (per subscription, in the
 * dispatcher's order) and `pending`. GenStage's subscription refs are the
 * numbers 1, 2, 3. Not ported, as we have no such features (see README):
 * "subscribes, asks and dispatches to multiple consumers with shuffled demands"
 * (shuffle_demands_on_first_dispatch) and "warns on demand mismatch" (max_demand).
 */
import { describe, expect, it } from 'vitest';
import { DemandDispatcher } from '../../src/index.js';
import { hostLog } from './upstream.js';

function dispatcher() {
  const log = hostLog<string | number>();
  return { log, d: new DemandDispatcher<string | number>(log.host) };
}

/** GenStage's demands list: [demand, ref] in the dispatcher's order. */
const demandsOf = (d: DemandDispatcher<unknown>) => [...d.demands()].map(([id, demand]) => [demand, id]);

describe('GenStage.DemandDispatcherTest (demand_dispatcher_test.exs)', () => {
  it('subscribes and cancels', () => {
    const { d } = dispatcher();
    expect(d.subscribe(1, { to: 'p' })).toBe(0);
    expect(demandsOf(d)).toEqual([[0, 1]]);
    expect(d.pending).toBe(0);
    expect(d.cancel(1)).toBe(0);
    expect(demandsOf(d)).toEqual([]);
    expect(d.pending).toBe(0);
  });

  it('subscribes, asks and cancels', () => {
    const { d } = dispatcher();
    // Subscribe, ask and cancel and leave some demand
    expect(d.subscribe(1, { to: 'p' })).toBe(0);
    expect(d.ask(1, 10)).toBe(10);
    expect(demandsOf(d)).toEqual([[10, 1]]);
    expect(d.cancel(1)).toBe(0);
    expect(demandsOf(d)).toEqual([]);
    expect(d.pending).toBe(10);

    // Subscribe, ask and cancel and leave the same demand
    expect(d.subscribe(1, { to: 'p' })).toBe(0);
    expect(d.pending).toBe(10);
    expect(d.ask(1, 5)).toBe(0);
    expect(demandsOf(d)).toEqual([[5, 1]]);
    expect(d.pending).toBe(5);
    expect(d.cancel(1)).toBe(0);
    expect(d.pending).toBe(10);

    // Now attempt to dispatch with no consumers
    expect(d.dispatch(['a', 'b', 'c'])).toEqual(['a', 'b', 'c']);
    expect(d.pending).toBe(7);
    expect(d.dispatch([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(d.pending).toBe(0);
  });

  it('subscribes twice, asks twice and cancel one', () => {
    const { d, log } = dispatcher();
    // Subscribe twice and ask twice
    d.subscribe(1, { to: 'p' });
    expect(d.ask(1, 3)).toBe(3);
    d.subscribe(2, { to: 'p' });
    expect(d.ask(2, 3)).toBe(3);
    expect(demandsOf(d)).toEqual([
      [3, 1],
      [3, 2],
    ]);
    expect(d.pending).toBe(0);

    // Cancel and leave some demand
    expect(d.cancel(1)).toBe(0);
    expect(demandsOf(d)).toEqual([[3, 2]]);
    expect(d.pending).toBe(3);

    // Send events for both subscriptions
    expect(d.dispatch(['a', 'b', 'c', 'd', 'e'])).toEqual(['d', 'e']);
    expect(demandsOf(d)).toEqual([[0, 2]]);
    expect(d.pending).toBe(1);
    expect(log.sent).toEqual([[2, ['a', 'b', 'c']]]);
  });

  it('subscribes, asks and dispatches', () => {
    const { d, log } = dispatcher();
    d.subscribe(1, { to: 'p' });
    expect(d.ask(1, 3)).toBe(3);
    expect(demandsOf(d)).toEqual([[3, 1]]);

    expect(d.dispatch(['a'])).toEqual([]);
    expect(demandsOf(d)).toEqual([[2, 1]]);
    expect(log.takeSent()).toEqual([[1, ['a']]]);

    expect(d.ask(1, 3)).toBe(3);
    expect(demandsOf(d)).toEqual([[5, 1]]);

    expect(d.dispatch(['b', 'c', 'd', 'e', 'f', 'g', 'h'])).toEqual(['g', 'h']);
    expect(demandsOf(d)).toEqual([[0, 1]]);
    expect(log.takeSent()).toEqual([[1, ['b', 'c', 'd', 'e', 'f']]]);

    expect(d.dispatch(['i', 'j'])).toEqual(['i', 'j']);
    expect(demandsOf(d)).toEqual([[0, 1]]);
    expect(log.takeSent()).toEqual([]);
  });

  it('subscribes, asks multiple consumers', () => {
    const { d } = dispatcher();
    d.subscribe(1, { to: 'p' });
    d.subscribe(2, { to: 'p' });
    d.subscribe(3, { to: 'p' });

    expect(d.ask(1, 4)).toBe(4);
    expect(d.ask(2, 2)).toBe(2);
    expect(d.ask(3, 3)).toBe(3);
    expect(demandsOf(d)).toEqual([
      [4, 1],
      [3, 3],
      [2, 2],
    ]);

    expect(d.ask(3, 2)).toBe(2);
    expect(demandsOf(d)).toEqual([
      [5, 3],
      [4, 1],
      [2, 2],
    ]);

    expect(d.ask(2, 4)).toBe(4);
    expect(demandsOf(d)).toEqual([
      [6, 2],
      [5, 3],
      [4, 1],
    ]);
  });

  it('subscribes, asks and dispatches to multiple consumers', () => {
    const { d, log } = dispatcher();
    d.subscribe(1, { to: 'p' });
    d.subscribe(2, { to: 'p' });
    expect(d.ask(1, 3)).toBe(3);
    expect(d.ask(2, 2)).toBe(2);
    expect(demandsOf(d)).toEqual([
      [3, 1],
      [2, 2],
    ]);

    // One batch fits all
    expect(d.dispatch(['a', 'b', 'c', 'd', 'e'])).toEqual([]);
    expect(log.takeSent()).toEqual([
      [1, ['a', 'b', 'c']],
      [2, ['d', 'e']],
    ]);

    expect(d.dispatch(['a', 'b', 'c'])).toEqual(['a', 'b', 'c']);
    expect(demandsOf(d)).toEqual([
      [0, 1],
      [0, 2],
    ]);
    expect(log.takeSent()).toEqual([]);

    // Two batches with left over
    expect(d.ask(1, 3)).toBe(3);
    expect(d.ask(2, 3)).toBe(3);
    expect(demandsOf(d)).toEqual([
      [3, 1],
      [3, 2],
    ]);

    expect(d.dispatch(['a', 'b'])).toEqual([]);
    expect(demandsOf(d)).toEqual([
      [3, 2],
      [1, 1],
    ]);
    expect(log.takeSent()).toEqual([[1, ['a', 'b']]]);

    expect(d.dispatch(['c', 'd'])).toEqual([]);
    expect(demandsOf(d)).toEqual([
      [1, 1],
      [1, 2],
    ]);
    expect(log.takeSent()).toEqual([[2, ['c', 'd']]]);

    // Eliminate the left-over
    expect(d.dispatch(['e', 'f', 'g'])).toEqual(['g']);
    expect(demandsOf(d)).toEqual([
      [0, 1],
      [0, 2],
    ]);
    expect(log.takeSent()).toEqual([
      [1, ['e']],
      [2, ['f']],
    ]);
  });

  it('delivers info to current process', () => {
    const { d, log } = dispatcher();
    d.subscribe(1, { to: 'p' });
    d.subscribe(2, { to: 'p' });
    d.ask(1, 3);
    const before = demandsOf(d);
    d.info('hello');
    expect(demandsOf(d)).toEqual(before);
    expect(log.infos).toEqual(['hello']);
  });
});
