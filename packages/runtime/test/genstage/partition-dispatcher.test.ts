/**
 * Ported from GenStage's test/gen_stage/partition_dispatcher_test.exs
 * (elixir-lang/gen_stage at 72198f86c8cd4ba149e8ee2ad80ab442d6d106be).
 *
 * GenStage asserts {waiting, pending} from the state tuple: here the
 * dispatcher's `waiting` and `pending`. Its refs are the numbers 1, 2.
 * GenStage's default hash is :erlang.phash2(event, 2), which puts 1, 2, 5,
 * 6, 7 in partition 0; where a case relies on that, the port passes a hash
 * that puts them there (ours defaults to FNV-1a, stable across hosts).
 * Our hash returns the partition (or undefined to discard), not
 * {event, partition}, so a hash cannot rewrite the event.
 *
 * Departure, asserted where the upstream case touches it: a cancelled
 * partition keeps its queue for its next subscriber (GenStage drops it);
 * the demand forwarded on cancel is the same. Partition queues are capped
 * (maxHeldPerPartition), with the producer's bufferKeep; the last cases
 * are ours and test that cap.
 */
import { describe, expect, it } from 'vitest';
import { PartitionDispatcher } from '../../src/index.js';
import { hostLog } from './upstream.js';

/** Where :erlang.phash2(x, 2) puts the events these cases use. */
const phash2Two = (x: number) => ([1, 2, 5, 6, 7].includes(x) ? 0 : 1);

function dispatcher(
  partitions: (string | number)[],
  hash: ((e: number) => string | number | undefined) | undefined = phash2Two,
  maxHeld = Number.POSITIVE_INFINITY,
  keep: 'first' | 'last' = 'last',
) {
  const log = hostLog<number>();
  return { log, d: new PartitionDispatcher<number>(partitions, hash, maxHeld, keep, log.host) };
}

const waitingAndPending = (d: PartitionDispatcher<number>) => [d.waiting, d.pending];

describe('GenStage.PartitionDispatcherTest (partition_dispatcher_test.exs)', () => {
  it('subscribes, asks and cancels', () => {
    const { d } = dispatcher([0, 1]);
    // Subscribe, ask and cancel and leave some demand
    expect(d.subscribe(1, { to: 'p', partition: 0 })).toBe(0);
    expect(d.ask(1, 10)).toBe(10);
    expect(waitingAndPending(d)).toEqual([10, 0]);
    expect(d.cancel(1)).toBe(0);
    expect(waitingAndPending(d)).toEqual([10, 10]);

    // Subscribe again and the same demand is back
    expect(d.subscribe(1, { to: 'p', partition: 1 })).toBe(0);
    expect(d.ask(1, 5)).toBe(0);
    expect(waitingAndPending(d)).toEqual([10, 5]);
    expect(d.cancel(1)).toBe(0);
    expect(waitingAndPending(d)).toEqual([10, 10]);

    // Now attempt to dispatch with no consumers
    expect(d.dispatch([0, 1, 2, 3])).toEqual([]);
    expect(waitingAndPending(d)).toEqual([6, 10]);
  });

  it('subscribes, asks and dispatches', () => {
    // phash2(x, 1) is 0 for every event.
    const { d, log } = dispatcher([0], () => 0);
    d.subscribe(1, { to: 'p', partition: 0 });
    expect(d.ask(1, 3)).toBe(3);
    expect(d.dispatch([1])).toEqual([]);
    expect(waitingAndPending(d)).toEqual([2, 0]);
    expect(log.takeSent()).toEqual([[1, [1]]]);

    expect(d.ask(1, 3)).toBe(3);
    expect(waitingAndPending(d)).toEqual([5, 0]);

    expect(d.dispatch([2, 5, 6, 7, 8, 9, 11])).toEqual([9, 11]);
    expect(waitingAndPending(d)).toEqual([0, 0]);
    expect(log.takeSent()).toEqual([[1, [2, 5, 6, 7, 8]]]);
  });

  it('subscribes, asks and dispatches to custom partitions', () => {
    const { d, log } = dispatcher(['odd', 'even'], (e) => (e % 2 === 0 ? 'even' : 'odd'));
    d.subscribe(1, { to: 'p', partition: 'odd' });
    expect(d.ask(1, 3)).toBe(3);
    expect(d.dispatch([1])).toEqual([]);
    expect(waitingAndPending(d)).toEqual([2, 0]);
    expect(log.takeSent()).toEqual([[1, [1]]]);

    expect(d.ask(1, 3)).toBe(3);
    expect(waitingAndPending(d)).toEqual([5, 0]);

    expect(d.dispatch([5, 7, 9, 11, 13, 15, 17])).toEqual([15, 17]);
    expect(waitingAndPending(d)).toEqual([0, 0]);
    expect(log.takeSent()).toEqual([[1, [5, 7, 9, 11, 13]]]);
  });

  it('subscribes, asks and dispatches to partitions or none', () => {
    const { d, log } = dispatcher(['odd', 'even'], (e) => (e % 3 === 0 ? undefined : e % 2 === 0 ? 'even' : 'odd'));
    d.subscribe(1, { to: 'p', partition: 'even' });
    d.subscribe(2, { to: 'p', partition: 'odd' });
    expect(d.ask(1, 4)).toBe(4);
    expect(d.ask(2, 4)).toBe(4);
    expect(d.dispatch([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])).toEqual([12]);
    expect(log.takeSent()).toEqual([
      [2, [1, 5, 7, 11]],
      [1, [2, 4, 8, 10]],
    ]);
    expect(waitingAndPending(d)).toEqual([0, 0]);
  });

  it('buffers events before subscription', () => {
    const { d, log } = dispatcher([0, 1]);
    // Use one subscription to queue
    d.subscribe(1, { to: 'p', partition: 1 });
    expect(d.ask(1, 5)).toBe(5);
    expect(d.dispatch([1, 2, 5, 6, 7])).toEqual([]);
    expect(waitingAndPending(d)).toEqual([0, 0]);
    expect(log.takeSent()).toEqual([]);

    expect(d.dispatch([8, 9])).toEqual([8, 9]);
    expect(waitingAndPending(d)).toEqual([0, 0]);

    // Use another subscription to get events back
    d.subscribe(2, { to: 'p', partition: 0 });
    expect(d.ask(2, 5)).toBe(5);
    expect(waitingAndPending(d)).toEqual([5, 0]);
    expect(log.takeSent()).toEqual([[2, [1, 2, 5, 6, 7]]]);

    expect(d.dispatch([1, 2])).toEqual([]);
    expect(waitingAndPending(d)).toEqual([3, 0]);
  });

  it('buffers events after subscription', () => {
    const { d, log } = dispatcher([0, 1]);
    d.subscribe(1, { to: 'p', partition: 0 });
    expect(d.ask(1, 5)).toBe(5);
    expect(waitingAndPending(d)).toEqual([5, 0]);

    d.subscribe(2, { to: 'p', partition: 1 });
    expect(d.ask(2, 5)).toBe(5);
    expect(waitingAndPending(d)).toEqual([10, 0]);

    // Send all events to the same partition, half of them will be buffered
    expect(d.dispatch([1, 2])).toEqual([]);
    expect(d.dispatch([5, 6, 7, 1, 2, 5, 6, 7])).toEqual([]);
    expect(waitingAndPending(d)).toEqual([0, 0]);
    expect(log.takeSent()).toEqual([
      [1, [1, 2]],
      [1, [5, 6, 7]],
    ]);

    expect(d.ask(1, 5)).toBe(5);
    expect(waitingAndPending(d)).toEqual([5, 0]);
    expect(log.takeSent()).toEqual([[1, [1, 2, 5, 6, 7]]]);
  });

  it('subscribes, asks and cancels with buffer (departure: the queue is kept for the next subscriber)', () => {
    const { d, log } = dispatcher([0, 1]);
    d.subscribe(1, { to: 'p', partition: 1 });
    expect(d.ask(1, 5)).toBe(5);
    expect(waitingAndPending(d)).toEqual([5, 0]);

    d.subscribe(2, { to: 'p', partition: 0 });
    expect(d.dispatch([1, 2, 5, 6, 7])).toEqual([]);
    expect(waitingAndPending(d)).toEqual([0, 0]);
    expect(log.takeSent()).toEqual([]);

    // The notification should not count as an event
    d.info('hello');
    expect(d.cancel(2)).toBe(5);
    expect(waitingAndPending(d)).toEqual([5, 0]);
    expect(log.infos).toEqual(['hello']);

    // Ours: the queued events wait for partition 0's next subscriber instead of being dropped.
    expect(d.held()).toBe(5);
    d.subscribe(3, { to: 'p', partition: 0 });
    expect(d.ask(3, 5)).toBe(5);
    expect(log.takeSent()).toEqual([[3, [1, 2, 5, 6, 7]]]);
    expect(d.held()).toBe(0);
  });

  it('delivers info to current process', () => {
    const { d, log } = dispatcher([0, 1]);
    d.subscribe(1, { to: 'p', partition: 0 });
    d.subscribe(2, { to: 'p', partition: 1 });
    expect(d.ask(2, 3)).toBe(3);
    d.info('hello');
    expect(waitingAndPending(d)).toEqual([3, 0]);
    expect(log.infos).toEqual(['hello']);
  });

  it('does not queue info for non-existing consumers', () => {
    const { d, log } = dispatcher([0, 1]);
    d.info('hello');
    expect(log.infos).toEqual(['hello']);
  });

  it('queues info to backed up consumers', () => {
    const { d, log } = dispatcher([0, 1]);
    d.subscribe(1, { to: 'p', partition: 0 });
    d.subscribe(2, { to: 'p', partition: 1 });
    expect(d.ask(2, 3)).toBe(3);
    expect(d.dispatch([1, 2, 5])).toEqual([]);

    d.info('hello');
    expect(log.infos).toEqual([]);

    expect(d.ask(1, 5)).toBe(5);
    expect(log.takeSent()).toEqual([[1, [1, 2, 5]]]);
    expect(log.infos).toEqual(['hello']);
  });

  it('raises on unknown partition', () => {
    const { d } = dispatcher(['foo', 'bar'], () => 'oops');
    d.subscribe(1, { to: 'p', partition: 'foo' });
    expect(d.ask(1, 3)).toBe(3);
    expect(() => d.dispatch([1, 2, 5])).toThrow(
      expect.objectContaining({
        code: 'SF_BAD_RETURN',
        message: expect.stringMatching(/partition hash returned "oops".*not one of the partitions/),
      }),
    );
  });

  it('errors if the :hash function returns a bad value', () => {
    const { d } = dispatcher(['foo', 'bar'], () => ({ not: 'a partition' }) as unknown as string);
    d.subscribe(1, { to: 'p', partition: 'foo' });
    expect(d.ask(1, 3)).toBe(3);
    expect(() => d.dispatch([1, 2, 5])).toThrow(/partition hash returned \{"not":"a partition"\}/);
  });

  it('errors on init (departure: names need no hash of their own)', async () => {
    const { createDispatcher } = await import('../../src/dispatchers/create-dispatcher.js');
    const host = hostLog<unknown>().host;
    expect(() => createDispatcher('stage p: init', { type: 'partition' }, 10, 'last', host)).toThrow(
      /option dispatcher.partitions = undefined: must be a positive integer or a non-empty list of names/,
    );
    // GenStage requires :hash when partitions are not integers; our default hash places any name.
    const named = createDispatcher('stage p: init', { type: 'partition', partitions: ['even', 'odd'] }, 10, 'last', host);
    expect(named.subscribe(1, { to: 'p', partition: 'odd' }, { id: 1, name: undefined, label: 'c' })).toBe(0);
  });

  it('errors on subscribe', () => {
    const { d } = dispatcher([0, 1]);
    expect(() => d.subscribe(1, { to: 'p' })).toThrow(/partition is required when subscribing/);
    d.subscribe(1, { to: 'p', partition: 0 });
    expect(() => d.subscribe(2, { to: 'p', partition: 0 })).toThrow(/partition 0 already has a subscriber/);
    expect(() => d.subscribe(3, { to: 'p', partition: -1 })).toThrow(/partition = -1: must be one of 0, 1/);
    expect(() => d.subscribe(3, { to: 'p', partition: 2 })).toThrow(/partition = 2: must be one of 0, 1/);
    expect(() => d.subscribe(3, { to: 'p', partition: 'oops' })).toThrow(/partition = "oops": must be one of 0, 1/);
  });
});

describe('a cancelled partition keeps its queue (ours: GenStage drops it)', () => {
  it('the queue is handed back to the producer once, however many subscribers come and go', () => {
    const { d, log } = dispatcher([0, 1], (x) => (x < 100 ? 0 : 1));
    d.subscribe(1, { to: 'p', partition: 1 });
    expect(d.ask(1, 4)).toBe(4);
    // All four hash to partition 0, which has no subscriber: they wait in its queue.
    expect(d.dispatch([1, 2, 3, 4])).toEqual([]);
    d.subscribe(2, { to: 'p', partition: 0 });
    // Those four used up partition 1's demand: the producer is asked to replace them.
    expect(d.cancel(2)).toBe(4);
    d.subscribe(3, { to: 'p', partition: 0 });
    // Still the same four: nothing new to replace.
    expect(d.cancel(3)).toBe(0);
    d.subscribe(4, { to: 'p', partition: 0 });
    expect(d.ask(4, 3)).toBe(3);
    expect(log.takeSent()).toEqual([[4, [1, 2, 3]]]);
    // Two more reach partition 0's queue behind the one left.
    expect(d.dispatch([5, 6])).toEqual([]);
    // The one left was handed back already; the two new ones were not.
    expect(d.cancel(4)).toBe(2);
    expect(d.held()).toBe(3);
  });
});

describe('partition queue cap (ours: GenStage has none)', () => {
  it.each([
    ['last', [4, 5, 6]],
    ['first', [1, 2, 3]],
  ] as const)('keep %s: a full queue keeps %j, counts and reports the rest', (keep, kept) => {
    const { d, log } = dispatcher([0, 1], (x) => (x < 100 ? 0 : 1), 3, keep);
    d.subscribe(1, { to: 'p', partition: 0 });
    d.subscribe(2, { to: 'p', partition: 1 });
    // Partition 1 asks; the producer cannot tell, and the events it sends all hash to partition 0.
    expect(d.ask(2, 6)).toBe(6);
    expect(d.dispatch([1, 2, 3, 4, 5, 6])).toEqual([]);
    expect(log.overflows).toEqual([{ partition: 0, dropped: 3, capacity: 3 }]);
    expect(d.held()).toBe(3);
    d.ask(1, 10);
    expect(log.takeSent()).toEqual([[1, kept]]);
  });

  it('an info queued behind events the cap drops is handed out, not lost', () => {
    const { d, log } = dispatcher([0, 1], (x) => (x < 100 ? 0 : 1), 2, 'last');
    d.subscribe(1, { to: 'p', partition: 0 });
    d.subscribe(2, { to: 'p', partition: 1 });
    d.ask(2, 4);
    d.dispatch([1, 2]);
    d.info('after 1 and 2');
    expect(log.infos).toEqual([]);
    d.dispatch([3, 4]);
    expect(log.infos).toEqual(['after 1 and 2']);
    expect(log.overflows).toEqual([{ partition: 0, dropped: 2, capacity: 2 }]);
  });
});
