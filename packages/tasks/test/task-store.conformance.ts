import { describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { type ClaimedTask, resolveRetention, type TaskClaim, type TaskState, type TaskStore } from '../src/index.js';
import { suiteStores } from './suite-stores.js';

/** A claim as it travels: the task, its attempt, its claimant, nothing else. */
const claimOf = (t: ClaimedTask | TaskClaim | undefined): TaskClaim => {
  if (t === undefined) throw new Error('no task was claimed');
  return { id: t.id, attempt: t.attempt, claimant: t.claimant };
};

/**
 * The contract every task store keeps; `make` returns a fresh, migrated,
 * empty store, and `peer` another instance on the same data, as another
 * node opens it (the same instance where the store lives in one process).
 */
export function taskStoreConformance(name: string, make: () => Promise<TaskStore>, peer: (store: TaskStore) => Promise<TaskStore>): void {
  describe(`task store conformance: ${name}`, () => {
    const { fresh, peerOf } = suiteStores(make, peer);

    it('claims by priority, then run-at, then order of enqueue; never more than the limit', async () => {
      const store = await fresh();
      await store.enqueue([
        { name: 'late', options: { priority: 5 } },
        { name: 'first', options: { priority: -1 } },
        { name: 'a' },
        { name: 'b' },
        { name: 'other-queue', options: { queue: 'other' } },
      ]);
      const claimed = await store.claim('default', 3, 'me', 10_000);
      expect(claimed.map((t) => t.name)).toEqual(['first', 'a', 'b']);
      expect(claimed.every((t) => t.attempt === 1 && t.queue === 'default')).toBe(true);
      expect((await store.claim('default', 10, 'me', 10_000)).map((t) => t.name)).toEqual(['late']);
      expect(await store.claim('default', 10, 'me', 10_000)).toEqual([]);
    });

    it('two claims at once never return the same task', async () => {
      const store = await fresh();
      await store.enqueue(Array.from({ length: 200 }, (_, i) => ({ name: 't', args: i })));
      const [a, b, c] = await Promise.all([
        store.claim('default', 80, 'a', 10_000),
        store.claim('default', 80, 'b', 10_000),
        store.claim('default', 80, 'c', 10_000),
      ]);
      const ids = [...(a ?? []), ...(b ?? []), ...(c ?? [])].map((t) => t.id);
      expect(ids).toHaveLength(200);
      expect(new Set(ids).size).toBe(200);
    });

    it('a delayed or scheduled task is not claimed before its time; nextRunAt tells when', async () => {
      const store = await fresh();
      const runAt = new Date(Date.now() + 60_000);
      await store.enqueue([
        { name: 'later', options: { runAt } },
        { name: 'soon', options: { delayMs: 300 } },
      ]);
      expect(await store.claim('default', 10, 'me', 10_000)).toEqual([]);
      const next = await store.nextRunAt('default');
      expect(next?.getTime()).toBeLessThan(runAt.getTime());
      await waitFor(async () => (await store.claim('default', 10, 'me', 10_000)).length === 1, 'the delayed task to come due');
    });

    it('a unique key refuses a duplicate while one is pending, and allows it once that one finished', async () => {
      const store = await fresh();
      const [first] = await store.enqueue([{ name: 'u', options: { uniqueKey: 'k1' } }]);
      const [dup] = await store.enqueue([{ name: 'u', options: { uniqueKey: 'k1' } }]);
      expect(dup).toEqual({ id: first?.id, duplicate: true });
      const both = await store.enqueue([
        { name: 'u', options: { uniqueKey: 'k2' } },
        { name: 'u', options: { uniqueKey: 'k2' } },
      ]);
      expect(both[1]).toEqual({ id: both[0]?.id, duplicate: true });
      const [claimed] = await store.claim('default', 1, 'me', 10_000);
      await store.complete([{ ...claimOf(claimed), status: 'success' }]);
      const [again] = await store.enqueue([{ name: 'u', options: { uniqueKey: 'k1' } }]);
      expect(again?.duplicate).toBe(false);
    });

    it('only a current claim records an outcome (same attempt, same claimant), and success is recorded once', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'x' }]);
      const [task] = await store.claim('default', 1, 'owner-a', 10_000);
      const claim = claimOf(task);
      expect(claim.claimant).toContain('owner-a');
      expect(await store.complete([{ ...claim, claimant: 'owner-b', status: 'success' }])).toEqual([]);
      expect(await store.complete([{ ...claim, attempt: 2, status: 'success' }])).toEqual([]);
      expect(await store.complete([{ ...claim, status: 'success' }])).toEqual([claim.id]);
      expect(await store.complete([{ ...claim, status: 'success' }])).toEqual([]);
      const record = await store.get(claim.id);
      expect(record).toMatchObject({ state: 'success', attempt: 1, leaseOwner: null });
      expect(record?.finishedAt).toBeInstanceOf(Date);
    });

    it('a claim travels: another node takes it over, extends it and records its outcome; the claiming node no longer hands it back', async () => {
      const store = await fresh();
      const other = await peerOf(store);
      await store.enqueue([{ name: 'a' }, { name: 'b' }]);
      const [a, b] = (await store.claim('default', 2, 'node-a', 10_000)).map(claimOf) as [TaskClaim, TaskClaim];
      const taken = await other.adopt([a, b], 'node-b', 10_000);
      expect(taken.map((c) => [c.id, c.attempt])).toEqual([
        [a.id, 1],
        [b.id, 1],
      ]);
      const [a2, b2] = taken as [TaskClaim, TaskClaim];
      expect(a2.claimant).not.toBe(a.claimant);
      // The claim it was taken over as holds; the producer's no longer does.
      expect(await other.adopt([a2], 'node-b', 10_000)).toEqual([a2]);
      expect(await other.adopt([a], 'node-c', 10_000)).toEqual([]);
      expect(await store.extendLeases([a], 10_000)).toEqual([]);
      expect(await store.complete([{ ...a, status: 'success' }])).toEqual([]);
      expect((await other.extendLeases([a2, b2], 10_000)).sort()).toEqual([a.id, b.id].sort());
      expect(await store.releaseHeld('node-a')).toEqual([]);
      expect(await store.get(a.id)).toMatchObject({ state: 'running', leaseOwner: 'node-b' });
      expect(await other.complete([{ ...a2, status: 'success' }])).toEqual([a.id]);
      expect(await other.releaseHeld('node-b')).toEqual([b.id]);
      expect(await store.get(a.id)).toMatchObject({ state: 'success' });
      expect(await store.get(b.id)).toMatchObject({ state: 'waiting', attempt: 0, leaseOwner: null });
    });

    it('a stale claim (an earlier attempt of the same node) can neither finish, extend, release nor hand over the later one', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'x' }]);
      const first = claimOf((await store.claim('default', 1, 'node-a', 200))[0]);
      await waitFor(async () => (await store.recoverExpired()) === 1, 'the first lease to lapse');
      let second: TaskClaim | undefined;
      await waitFor(async () => {
        second = (await store.claim('default', 1, 'node-a', 10_000)).map(claimOf)[0];
        return second !== undefined;
      }, 'the task to be claimed again');
      expect(second?.attempt).toBe(2);
      expect(await store.complete([{ ...first, status: 'error', error: 'stale', retryAt: new Date() }])).toEqual([]);
      expect(await store.extendLeases([first], 10_000)).toEqual([]);
      expect(await store.release([first])).toEqual([]);
      expect(await store.adopt([first], 'node-b', 10_000)).toEqual([]);
      expect(await store.get(first.id)).toMatchObject({ state: 'running', attempt: 2 });
      expect(await store.complete([{ ...claimOf(second), status: 'success' }])).toEqual([first.id]);
    });

    it('a task whose lease lapses on its last attempt fails for good; one with attempts left waits again', async () => {
      const store = await fresh();
      const [last, more] = await store.enqueue([
        { name: 'last', options: { maxAttempts: 1, uniqueKey: 'once' } },
        { name: 'more', options: { maxAttempts: 2 } },
      ]);
      expect(await store.claim('default', 2, 'dying-node', 200)).toHaveLength(2);
      let recovered = 0;
      await waitFor(async () => {
        recovered += await store.recoverExpired();
        return recovered === 2;
      }, 'both leases to lapse');
      expect(await store.get(last?.id as string)).toMatchObject({ state: 'error', attempt: 1, leaseOwner: null });
      expect((await store.get(last?.id as string))?.lastError).toMatch(/lease of dying-node expired on its last attempt \(1 of 1\)/);
      expect(await store.get(more?.id as string)).toMatchObject({ state: 'waiting', attempt: 1 });
      // Final: its unique key is free again.
      expect((await store.enqueue([{ name: 'last', options: { uniqueKey: 'once' } }]))[0]?.duplicate).toBe(false);
    });

    it('a failed attempt with retryAt waits again; the last attempt fails for good', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'flaky', options: { maxAttempts: 2 } }]);
      const [t1] = await store.claim('default', 1, 'me', 10_000);
      await store.complete([{ ...claimOf(t1), status: 'error', error: 'boom 1', retryAt: new Date(Date.now() + 50) }]);
      expect(await store.get(t1?.id as string)).toMatchObject({ state: 'waiting', attempt: 1, lastError: 'boom 1' });
      let t2: Awaited<ReturnType<TaskStore['claim']>>[number] | undefined;
      await waitFor(async () => {
        [t2] = await store.claim('default', 1, 'me', 10_000);
        return t2 !== undefined;
      }, 'the retry to come due');
      expect(t2?.attempt).toBe(2);
      await store.complete([{ ...claimOf(t2), status: 'timeout', error: 'timed out after 10 ms' }]);
      expect(await store.get(t2?.id as string)).toMatchObject({ state: 'timeout', attempt: 2, lastError: 'timed out after 10 ms' });
    });

    it('a running task whose lease expired goes back to waiting; extending keeps it', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'kept' }, { name: 'lost' }]);
      const claimed = await store.claim('default', 2, 'dying-node', 200);
      const kept = claimOf(claimed.find((t) => t.name === 'kept'));
      const lost = claimOf(claimed.find((t) => t.name === 'lost'));
      await waitFor(async () => {
        expect(await store.extendLeases([kept], 10_000)).toEqual([kept.id]);
        return (await store.recoverExpired()) === 1;
      }, 'the lease to expire');
      expect(await store.get(lost.id)).toMatchObject({ state: 'waiting', leaseOwner: null });
      expect((await store.get(lost.id))?.lastError).toMatch(/lease of dying-node expired: its node stopped or stalled/);
      expect(await store.get(kept.id)).toMatchObject({ state: 'running', leaseOwner: 'dying-node' });
      expect(await store.extendLeases([lost], 10_000)).toEqual([]);
    });

    it('release and releaseHeld hand tasks of their holder back to waiting, the attempt not counted, and no other tasks', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }]);
      const mine = (await store.claim('default', 3, 'me', 10_000)).map(claimOf);
      const theirs = claimOf((await store.claim('default', 1, 'other', 10_000))[0]);
      const [first, ...rest] = mine as [TaskClaim, ...TaskClaim[]];
      // A claim that names the wrong claimant releases nothing.
      expect(await store.release([first, { ...theirs, claimant: first.claimant }])).toEqual([first.id]);
      expect((await store.releaseHeld('me')).sort()).toEqual(rest.map((c) => c.id).sort());
      expect(await store.releaseHeld('me')).toEqual([]);
      for (const { id } of mine) expect(await store.get(id)).toMatchObject({ state: 'waiting', attempt: 0, leaseOwner: null });
      expect(await store.get(theirs.id)).toMatchObject({ state: 'running', leaseOwner: 'other' });
      let again: Awaited<ReturnType<TaskStore['claim']>> = [];
      await waitFor(async () => {
        again = [...again, ...(await store.claim('default', 3, 'next', 10_000))];
        return again.length === 3;
      }, 'the three to be claimed again');
      expect(again.map((t) => t.attempt)).toEqual([1, 1, 1]);
    });

    it('wakes listeners of a queue on enqueue', async () => {
      const store = await fresh();
      let woken = 0;
      const stop = await store.onEnqueued('default', () => woken++);
      await store.enqueue([{ name: 'x', options: { queue: 'other' } }]);
      await store.enqueue([{ name: 'x' }]);
      await waitFor(() => woken === 1, 'one wake-up');
      await stop();
    });

    it('counts, lists, retries and cancels', async () => {
      const store = await fresh();
      const [a, b] = await store.enqueue([{ name: 'a' }, { name: 'b', args: { deep: [1, { x: 'é' }] } }]);
      const [claimed] = await store.claim('default', 1, 'me', 10_000);
      await store.complete([{ ...claimOf(claimed), status: 'error', error: 'no' }]);
      expect(await store.counts()).toEqual([
        { queue: 'default', state: 'error', count: 1 },
        { queue: 'default', state: 'waiting', count: 1 },
      ]);
      expect((await store.list({ state: 'waiting' })).map((t) => [t.id, t.args])).toEqual([[b?.id, { deep: [1, { x: 'é' }] }]]);
      expect(await store.cancel([b?.id as string, a?.id as string])).toEqual([b?.id]);
      expect((await store.retry([a?.id as string, b?.id as string])).sort()).toEqual([a?.id, b?.id].sort());
      expect(await store.get(a?.id as string)).toMatchObject({ state: 'waiting', attempt: 0, lastError: null });
      expect(await store.get('999999')).toBeNull();
      expect(await store.get('not-an-id')).toBeNull();
    });

    it('counts stay right through every transition: enqueue, claim, release, outcomes, recovery, cancel, retry, prune', async () => {
      const store = await fresh();
      const expected = new Map<string, number>();
      const move = (queue: string, from: TaskState | null, to: TaskState | null, n = 1) => {
        for (const [state, d] of [
          [from, -n],
          [to, n],
        ] as const)
          if (state !== null) expected.set(`${queue}/${state}`, (expected.get(`${queue}/${state}`) ?? 0) + d);
      };
      // counts() as expected, and as a full read of the tasks finds them (countWhere).
      const check = async (step: string) => {
        const want = [...expected]
          .filter(([, n]) => n !== 0)
          .map(([k, count]) => {
            const [queue, state] = k.split('/') as [string, TaskState];
            return { queue, state, count };
          })
          .sort((a, b) => a.queue.localeCompare(b.queue) || a.state.localeCompare(b.state));
        expect(await store.counts(), `counts after ${step}`).toEqual(want);
        for (const { queue, state, count } of want)
          expect(await store.countWhere({ queue, state }), `${queue}/${state} after ${step}`).toBe(count);
      };
      const claimNamed = async (names: string[], leaseMs = 10_000) => {
        const got: ClaimedTask[] = [];
        await waitFor(
          async () => {
            got.push(...(await store.claim('default', names.length - got.length, 'me', leaseMs)));
            return got.length === names.length;
          },
          `${names.join(', ')} to be claimed`,
        );
        expect(got.map((t) => t.name).sort()).toEqual([...names].sort());
        return (name: string) => claimOf(got.find((t) => t.name === name));
      };

      const ids = await store.enqueue([
        { name: 's' },
        { name: 'r', options: { maxAttempts: 2 } },
        { name: 't' },
        { name: 'x', options: { priority: 9 } },
        { name: 'y', options: { priority: 9 } },
        { name: 'o', options: { queue: 'other' } },
      ]);
      move('default', null, 'waiting', 5);
      move('other', null, 'waiting');
      await check('enqueue');
      const id = (i: number) => ids[i]?.id as string;
      expect(await store.cancel([id(3)])).toEqual([id(3)]);
      move('default', 'waiting', 'cancelled');
      await check('cancel');
      expect(await store.cancelWhere({ name: 'y' })).toBe(1);
      move('default', 'waiting', 'cancelled');
      await check('cancel by filter');
      let c = await claimNamed(['s', 'r', 't']);
      move('default', 'waiting', 'running', 3);
      await check('claim');
      expect(await store.release([c('t')])).toEqual([c('t').id]);
      move('default', 'running', 'waiting');
      await check('release');
      const t = (await claimNamed(['t']))('t');
      move('default', 'waiting', 'running');
      const outcomes = await store.complete([
        { ...c('s'), status: 'success' },
        { ...c('r'), status: 'error', error: 'again', retryAt: new Date() },
        { ...t, status: 'timeout', error: 'too slow' },
      ]);
      expect(outcomes).toHaveLength(3);
      move('default', 'running', 'success');
      move('default', 'running', 'waiting');
      move('default', 'running', 'timeout');
      await check('success, an error to retry and a timeout');
      c = await claimNamed(['r']);
      expect(await store.complete([{ ...c('r'), status: 'error', error: 'for good' }])).toEqual([c('r').id]);
      move('default', 'waiting', 'error');
      await check('a final error');
      await store.enqueue([
        { name: 'lost-last', options: { maxAttempts: 1 } },
        { name: 'lost-again', options: { maxAttempts: 3 } },
      ]);
      move('default', null, 'waiting', 2);
      await claimNamed(['lost-last', 'lost-again'], 200);
      move('default', 'waiting', 'running', 2);
      await check('claims with a short lease');
      let recovered = 0;
      await waitFor(async () => {
        recovered += await store.recoverExpired();
        return recovered === 2;
      }, 'both leases to lapse and be recovered');
      move('default', 'running', 'error');
      move('default', 'running', 'waiting');
      await check('lease recovery');
      expect(await store.retryWhere({ state: 'cancelled' })).toBe(2);
      move('default', 'cancelled', 'waiting', 2);
      await check('retry by filter');
      expect(await store.retry([t.id])).toEqual([t.id]);
      move('default', 'timeout', 'waiting');
      await check('retry');
      c = await claimNamed(['lost-again', 'x', 'y', 't']);
      const running = c('x');
      expect(await store.cancelRunning([running.id])).toEqual([running.id]);
      move('default', 'waiting', 'running', 3);
      move('default', 'waiting', 'cancelled');
      await check('cancel while running');
      expect(await store.complete(['lost-again', 'y', 't'].map((n) => ({ ...c(n), status: 'success' as const })))).toHaveLength(3);
      move('default', 'running', 'success', 3);
      await check('a batch of successes');
      const keepNone = { maxCount: 0 };
      const policy = (success: { maxCount: number }, failed: { maxCount: number } | false) =>
        resolveRetention({ success, error: failed, timeout: failed, cancelled: failed });
      expect(await store.pruneFinished(policy({ maxCount: 1 }, false), 100)).toEqual([{ states: ['success'], count: 3 }]);
      move('default', 'success', null, 3);
      await check('retention keeping the newest success');
      const pruned = await store.pruneFinished(policy(keepNone, keepNone), 100);
      expect(pruned.reduce((n, p) => n + p.count, 0)).toBe(4);
      move('default', 'success', null);
      move('default', 'error', null, 2);
      move('default', 'cancelled', null);
      await check('retention of every finished task');
    });

    it('a paused queue gives nothing to claims until it is resumed; other queues go on; resume wakes its producers', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'a' }, { name: 'b' }, { name: 'o', options: { queue: 'other' } }]);
      await store.pause('default');
      await store.pause('default');
      expect(await store.paused()).toEqual(['default']);
      expect(await store.claim('default', 10, 'me', 10_000)).toEqual([]);
      // No wake-up time either: a producer with demand does not spin on a paused queue.
      expect(await store.nextRunAt('default')).toBeNull();
      expect((await store.claim('other', 10, 'me', 10_000)).map((t) => t.name)).toEqual(['o']);
      let woken = 0;
      const stop = await store.onEnqueued('default', () => woken++);
      await store.resume('default');
      await store.resume('default');
      expect(await store.paused()).toEqual([]);
      await waitFor(() => woken >= 1, 'resume to wake the queue');
      expect((await store.claim('default', 10, 'me', 10_000)).map((t) => t.name)).toEqual(['a', 'b']);
      await stop();
    });

    it('filters by state, queue, name and error text (case-insensitive, % and _ taken literally), pages, and acts by filter', async () => {
      const store = await fresh();
      await store.enqueue([
        { name: 'mail', args: { n: 1 } },
        { name: 'mail', args: { n: 2 } },
        { name: 'thumb', args: { n: 3 } },
        { name: 'mail', args: { n: 4 }, options: { queue: 'other' } },
      ]);
      const claimed = await store.claim('default', 3, 'me', 10_000);
      const task = (n: number) => claimOf(claimed.find((t) => (t.args as { n: number }).n === n));
      const id = (n: number) => task(n).id;
      await store.complete([
        { ...task(1), status: 'error', error: 'SMTP 550: Mailbox_Full' },
        { ...task(2), status: 'success' },
        { ...task(3), status: 'error', error: 'disk 100% full' },
      ]);
      const args = (tasks: readonly { args: unknown }[]) => tasks.map((t) => (t.args as { n: number }).n).sort();
      expect(args(await store.list({ name: 'mail' }))).toEqual([1, 2, 4]);
      expect(args(await store.list({ errorContains: 'mailbox_full' }))).toEqual([1]);
      expect(args(await store.list({ errorContains: '_' }))).toEqual([1]);
      expect(args(await store.list({ errorContains: '100%' }))).toEqual([3]);
      expect(args(await store.list({ errorContains: 'FULL', state: 'error', name: 'thumb' }))).toEqual([3]);
      expect(args(await store.list({ queue: 'other' }))).toEqual([4]);
      const first = await store.list({ limit: 3 });
      const rest = await store.list({ limit: 3, offset: 3 });
      expect(first).toHaveLength(3);
      expect(args([...first, ...rest])).toEqual([1, 2, 3, 4]);
      expect(await store.countWhere({})).toBe(4);
      expect(await store.countWhere({ state: 'error' })).toBe(2);
      expect(await store.countWhere({ name: 'mail', errorContains: 'smtp' })).toBe(1);
      // Only waiting tasks are cancelled, only failed or cancelled ones retried: the rest of the match is left alone.
      expect(await store.cancelWhere({ name: 'mail' })).toBe(1);
      expect(await store.list({ queue: 'other' })).toMatchObject([{ state: 'cancelled' }]);
      expect(await store.retryWhere({ name: 'mail' })).toBe(2);
      expect(await store.countWhere({ name: 'mail', state: 'waiting' })).toBe(2);
      expect(await store.get(id(2))).toMatchObject({ state: 'success' });
      expect(await store.get(id(3))).toMatchObject({ state: 'error', lastError: 'disk 100% full' });
      expect(await store.retryWhere({ name: 'mail' })).toBe(0);
    });

    it('keeps each finished attempt: its number, outcome, error, duration and owner, a lost lease too', async () => {
      const store = await fresh();
      await store.enqueue([{ name: 'flaky', options: { maxAttempts: 3 } }]);
      const [t1] = await store.claim('default', 1, 'node-a', 200);
      const id = t1?.id as string;
      // The first attempt's node dies: its lease lapses.
      await waitFor(async () => (await store.recoverExpired()) === 1, 'the lease to expire');
      let t2: Awaited<ReturnType<TaskStore['claim']>>[number] | undefined;
      await waitFor(async () => {
        [t2] = await store.claim('default', 1, 'node-b', 10_000);
        return t2 !== undefined;
      }, 'the second attempt');
      await store.complete([
        { ...claimOf(t2), status: 'error', error: 'first <b>failure</b>', retryAt: new Date(Date.now() + 20), durationMs: 12 },
      ]);
      let t3: Awaited<ReturnType<TaskStore['claim']>>[number] | undefined;
      await waitFor(async () => {
        [t3] = await store.claim('default', 1, 'node-c', 10_000);
        return t3 !== undefined;
      }, 'the retry to come due');
      await store.complete([{ ...claimOf(t3), status: 'success', durationMs: 7 }]);
      const attempts = await store.attempts(id);
      expect(attempts).toMatchObject([
        { attempt: 1, outcome: 'lost', durationMs: null },
        { attempt: 2, outcome: 'error', error: 'first <b>failure</b>', durationMs: 12, owner: 'node-b' },
        { attempt: 3, outcome: 'success', error: null, durationMs: 7, owner: 'node-c' },
      ]);
      expect(attempts[0]?.error).toMatch(/lease of node-a expired/);
      for (const a of attempts) expect(a.finishedAt).toBeInstanceOf(Date);
      expect(await store.attempts('not-an-id')).toEqual([]);
    });

    it('progress: recorded while the claim is current, read back by get and list, cleared by an operator retry', async () => {
      const store = await fresh();
      const [t] = await store.enqueue([{ name: 'p', options: { maxAttempts: 1 } }]);
      expect((await store.get(t?.id as string))?.progress).toBeNull();
      const [claimed] = await store.claim('default', 1, 'me', 10_000);
      const claim = claimOf(claimed);
      expect(await store.progress(claim, 25)).toBe(true);
      expect((await store.get(claim.id))?.progress).toBe(25);
      expect(await store.progress(claim, { phase: 'copy', files: 3 })).toBe(true);
      expect((await store.list({ state: 'running' }))[0]?.progress).toEqual({ phase: 'copy', files: 3 });
      // Not this claim's: refused, nothing changes.
      expect(await store.progress({ ...claim, claimant: 'someone-else' }, 99)).toBe(false);
      await expect(store.progress(claim, 101)).rejects.toMatchObject({ code: 'SF_BAD_OPTION' });
      await expect(store.progress(claim, { big: 'x'.repeat(5000) })).rejects.toThrow(/over the limit of 4096/);
      expect((await store.get(claim.id))?.progress).toEqual({ phase: 'copy', files: 3 });
      await store.complete([{ ...claim, status: 'error', error: 'boom' }]);
      expect(await store.progress(claim, 50)).toBe(false);
      expect((await store.get(claim.id))?.progress).toEqual({ phase: 'copy', files: 3 });
      await store.retry([claim.id]);
      expect((await store.get(claim.id))?.progress).toBeNull();
    });

    it('refuses bad input at enqueue with an error naming the task and the problem, storing nothing', async () => {
      const store = await fresh();
      const cyclic: Record<string, unknown> = { a: 1 };
      cyclic.self = cyclic;
      const cases: [Parameters<TaskStore['enqueue']>[0], RegExp][] = [
        [[{ name: 'fn', args: { cb: () => 1 } }], /task 0 \(fn\): args cannot be stored: args\.cb is a function/],
        [[{ name: 'ok' }, { name: 'cycle', args: cyclic }], /task 1 \(cycle\): args cannot be stored: args\.self refers back to itself/],
        [[{ name: 'big', args: 'x'.repeat(1024 * 1024 + 1) }], /task 0 \(big\): args are \d+ bytes as JSON, over the limit of 1048576/],
        [[{ name: '' }], /task 0: name must be a non-empty string/],
        [[{ name: 'd', options: { delayMs: -5 } }], /option delayMs = -5: must be a non-negative number/],
        [[{ name: 'm', options: { maxAttempts: 0 } }], /option maxAttempts = 0: must be an integer from 1 to 1000/],
        [[{ name: 'both', options: { delayMs: 5, runAt: new Date() } }], /give runAt or delayMs, not both/],
        [[{ name: 'n', args: 10n }], /args is a BigInt/],
      ];
      for (const [tasks, message] of cases) await expect(store.enqueue(tasks)).rejects.toThrow(message);
      expect(await store.counts()).toEqual([]);
    });
  });
}
