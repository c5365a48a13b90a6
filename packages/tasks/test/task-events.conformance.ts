import { describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import type { EnqueueResult, TaskEvent, TaskEventsOverflow, TaskStore } from '../src/index.js';
import { decodeEvents } from '../src/index.js';
import { suiteStores } from './suite-stores.js';

type Seen = TaskEvent | TaskEventsOverflow;

/**
 * Follows `store.events()` in the background until `stop` is called; returns
 * once the follower is subscribed (a probe task's enqueued event came back).
 */
export async function follow(store: TaskStore, probe: TaskStore): Promise<{ seen: Seen[]; stop: () => Promise<void> }> {
  const seen: Seen[] = [];
  const abort = new AbortController();
  const done = (async () => {
    for await (const e of store.events({ signal: abort.signal })) seen.push(e);
  })();
  await waitFor(async () => {
    await probe.enqueue([{ name: 'probe', options: { queue: 'events-probe' } }]);
    return seen.some((e) => e.type === 'enqueued' && e.queue === 'events-probe');
  }, 'the events follower to be subscribed');
  return {
    seen,
    stop: async () => {
      abort.abort();
      await done;
    },
  };
}

const of = (seen: Seen[], id: string) => seen.filter((e): e is TaskEvent => e.type !== 'overflow' && e.id === id);

/** Task lifecycle events, followed from another node's view of the store. */
export function taskEventsConformance(name: string, make: () => Promise<TaskStore>, peer: (store: TaskStore) => Promise<TaskStore>) {
  describe(`task events (${name})`, () => {
    const { fresh, peerOf } = suiteStores(make, peer);

    it('follows a task from enqueue through start and progress to success, from another node', async () => {
      const store = await fresh();
      const watcher = await peerOf(store);
      const f = await follow(watcher, store);
      try {
        const [{ id } = { id: '' }] = await store.enqueue([{ name: 'resize', args: { w: 1 }, options: { queue: 'ev' } }]);
        const [claim] = await store.claim('ev', 1, 'node-a', 30_000);
        expect(claim?.id).toBe(id);
        if (claim === undefined) return;
        expect(await store.progress(claim, 40)).toBe(true);
        expect(await store.complete([{ ...claim, status: 'success' }])).toEqual([id]);
        await waitFor(() => of(f.seen, id).some((e) => e.type === 'succeeded'), 'the succeeded event');
        const events = of(f.seen, id);
        expect(events.map((e) => e.type)).toEqual(['enqueued', 'started', 'progress', 'succeeded']);
        expect(events.every((e) => e.queue === 'ev' && typeof e.at === 'number')).toBe(true);
        expect(events[0]?.name).toBe('resize');
        expect(events[1]).toMatchObject({ name: 'resize', attempt: 1 });
        expect(events[2]).toMatchObject({ progress: 40, attempt: 1 });
        expect(events[3]).toMatchObject({ attempt: 1 });
      } finally {
        await f.stop();
      }
    });

    it('tells a failed attempt that will run again (retried, with its error) from a final failure', async () => {
      const store = await fresh();
      const watcher = await peerOf(store);
      const f = await follow(watcher, store);
      try {
        const [{ id } = { id: '' }] = await store.enqueue([{ name: 'flaky', options: { queue: 'ev', maxAttempts: 2 } }]);
        const [first] = await store.claim('ev', 1, 'node-a', 30_000);
        if (first === undefined) throw new Error('nothing claimed');
        await store.complete([{ ...first, status: 'error', error: `boom ${'x'.repeat(20_000)}`, retryAt: new Date(Date.now() - 1) }]);
        const [second] = await store.claim('ev', 1, 'node-a', 30_000);
        if (second === undefined) throw new Error('the retry was not claimed');
        await store.complete([{ ...second, status: 'error', error: 'boom again' }]);
        await waitFor(() => of(f.seen, id).some((e) => e.type === 'failed'), 'the failed event');
        const events = of(f.seen, id);
        expect(events.map((e) => [e.type, e.attempt])).toEqual([
          ['enqueued', 0],
          ['started', 1],
          ['retried', 1],
          ['started', 2],
          ['failed', 2],
        ]);
        // An error too long for a notification is cut, so the event still arrives.
        expect(events[2]?.error?.startsWith('boom x')).toBe(true);
        expect((events[2]?.error ?? '').length).toBeLessThanOrEqual(500);
        expect(events[4]?.error).toBe('boom again');
      } finally {
        await f.stop();
      }
    });

    it('reports cancelled tasks, waiting or running, and an operator retry', async () => {
      const store = await fresh();
      const watcher = await peerOf(store);
      const f = await follow(watcher, store);
      try {
        const [a, b] = await store.enqueue([
          { name: 'a', options: { queue: 'ev' } },
          { name: 'b', options: { queue: 'ev', priority: 1 } },
        ]);
        const [running] = await store.claim('ev', 1, 'node-a', 30_000);
        expect(running?.id).toBe(a?.id);
        expect(await store.cancel([b?.id ?? ''])).toEqual([b?.id]);
        expect(await store.cancelRunning([a?.id ?? ''])).toEqual([a?.id]);
        expect(await store.retry([b?.id ?? ''])).toEqual([b?.id]);
        await waitFor(() => of(f.seen, b?.id ?? '').some((e) => e.type === 'retried'), 'the retried event');
        await waitFor(() => of(f.seen, a?.id ?? '').some((e) => e.type === 'cancelled'), 'the cancelled event of the running task');
        expect(of(f.seen, b?.id ?? '').map((e) => e.type)).toEqual(['enqueued', 'cancelled', 'retried']);
        expect(of(f.seen, a?.id ?? '').map((e) => e.type)).toEqual(['enqueued', 'started', 'cancelled']);
      } finally {
        await f.stop();
      }
    });

    it('reports lease recoveries (retried, or failed on the last attempt, with reason lease-lost) and tasks handed back (released)', async () => {
      const store = await fresh();
      const watcher = await peerOf(store);
      const f = await follow(watcher, store);
      try {
        const [again, last, handed, held] = (await store.enqueue([
          { name: 'again', options: { queue: 'ev', maxAttempts: 2, priority: 1 } },
          { name: 'last', options: { queue: 'ev', maxAttempts: 1, priority: 2 } },
          { name: 'handed', options: { queue: 'ev', priority: 3 } },
          { name: 'held', options: { queue: 'ev', priority: 4 } },
        ])) as [EnqueueResult, EnqueueResult, EnqueueResult, EnqueueResult];
        // Two runs whose node stops extending their leases, one claim handed back, one node stopping with a claim it holds.
        expect((await store.claim('ev', 2, 'node-a', 50)).map((t) => t.name)).toEqual(['again', 'last']);
        const [handedClaim] = await store.claim('ev', 1, 'node-b', 30_000);
        expect((await store.claim('ev', 1, 'node-c', 30_000)).map((t) => t.name)).toEqual(['held']);
        expect(await store.release(handedClaim === undefined ? [] : [handedClaim])).toEqual([handed.id]);
        expect(await store.releaseHeld('node-c')).toEqual([held.id]);
        let recovered = 0;
        await waitFor(async () => {
          recovered += await store.recoverExpired();
          return recovered >= 2;
        }, 'both lapsed leases to be recovered');
        const lastOf = (id: string) => of(f.seen, id).at(-1);
        await waitFor(
          () => lastOf(again.id)?.type === 'retried' && lastOf(last.id)?.type === 'failed' && lastOf(held.id)?.type === 'released',
          'the recovery and release events',
        );
        expect(of(f.seen, again.id).map((e) => e.type)).toEqual(['enqueued', 'started', 'retried']);
        expect(lastOf(again.id)).toMatchObject({
          name: 'again',
          queue: 'ev',
          attempt: 1,
          reason: 'lease-lost',
          error: expect.stringMatching(/^lease of \S+ expired: its node stopped or stalled$/),
        });
        expect(lastOf(last.id)).toMatchObject({
          name: 'last',
          attempt: 1,
          reason: 'lease-lost',
          error: expect.stringMatching(/expired on its last attempt \(1 of 1\)/),
        });
        expect(of(f.seen, handed.id).map((e) => e.type)).toEqual(['enqueued', 'started', 'released']);
        expect(lastOf(handed.id)).toMatchObject({ name: 'handed', queue: 'ev', attempt: 1 });
        expect(lastOf(handed.id)?.reason).toBeUndefined();
        expect(lastOf(held.id)).toMatchObject({ name: 'held', attempt: 1 });
        // Handed back, its attempt not counted: the next claim is attempt 1 again.
        expect((await store.get(handed.id))?.state).toBe('waiting');
      } finally {
        await f.stop();
      }
    });

    it('ends when its signal aborts', async () => {
      const store = await fresh();
      const f = await follow(store, store);
      await f.stop();
      const before = f.seen.length;
      await store.enqueue([{ name: 'late', options: { queue: 'ev' } }]);
      // The follower ended (stop awaited its loop): nothing more is collected.
      expect(f.seen.length).toBe(before);
    });
  });
}

/** Listens to one of a SQL store's notification channels directly, not as a follower; returns how to stop. */
export type RawListen = (store: TaskStore, channel: 'events' | 'enqueued', push: (payload: string) => void) => Promise<() => Promise<void>>;

/** What a SQL store sends on its events channel, heard directly (not as a follower), while tasks run. */
export async function eventsSent(store: TaskStore, listen: RawListen) {
  const sent: TaskEvent[] = [];
  const wakes: string[] = [];
  const stops = [
    await listen(store, 'events', (payload) => sent.push(...decodeEvents(payload))),
    await listen(store, 'enqueued', (payload) => wakes.push(payload)),
  ];
  return {
    sent,
    /**
     * One task through enqueue, claim, progress and success; then a marker
     * task on a queue of its own. Notifications arrive in commit order, so
     * once the marker's wake-up is here, every event the run sent is too.
     */
    async run(queue: string): Promise<string> {
      const [task] = await store.enqueue([{ name: 'quiet', options: { queue } }]);
      const [claim] = await store.claim(queue, 1, 'node-a', 30_000);
      if (task === undefined || claim === undefined) throw new Error('nothing claimed');
      expect(await store.progress(claim, 10)).toBe(true);
      expect(await store.complete([{ ...claim, status: 'success' }])).toEqual([task.id]);
      await store.enqueue([{ name: 'marker', options: { queue: `${queue}-marker` } }]);
      await waitFor(() => wakes.includes(`${queue}-marker`), `the wake-up of ${queue}-marker`);
      return task.id;
    },
    async stop(): Promise<void> {
      for (const stop of stops) await stop();
    },
  };
}

/** The SQL stores build and send lifecycle events only while someone follows them. */
export function eventsWhenFollowedConformance(name: string, make: () => Promise<TaskStore>, listen: RawListen) {
  describe(`task events only while followed (${name})`, () => {
    const { fresh } = suiteStores(make);

    it('sends no event while no one follows; a follower gets every one; once it stops, none are sent again', async () => {
      const store = await fresh();
      const heard = await eventsSent(store, listen);
      try {
        await heard.run('unfollowed');
        expect(heard.sent).toEqual([]);
        const f = await follow(store, store);
        const followed = await heard.run('followed');
        await f.stop();
        expect(of(heard.sent, followed).map((e) => e.type)).toEqual(['enqueued', 'started', 'progress', 'succeeded']);
        expect(of(f.seen, followed).map((e) => e.type)).toEqual(['enqueued', 'started', 'progress', 'succeeded']);
        const before = heard.sent.length;
        await heard.run('after');
        expect(heard.sent.length).toBe(before);
      } finally {
        await heard.stop();
      }
    });
  });
}
