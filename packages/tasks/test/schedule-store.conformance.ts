import { FabricError, FakeClock } from '@stagefabric/runtime';
import { afterEach, describe, expect, it } from 'vitest';
import {
  nextFire,
  type ScheduleDefinition,
  type ScheduleRecord,
  startTaskScheduler,
  type TaskScheduler,
  type TaskStore,
} from '../src/index.js';
import { suiteStores } from './suite-stores.js';

const MINUTE = 60_000;

/** The error a promise rejects with. */
async function rejection(promise: Promise<unknown>): Promise<FabricError> {
  try {
    await promise;
  } catch (error) {
    return error as FabricError;
  }
  throw new Error('expected a rejection');
}

/**
 * Schedules, as every task store keeps them: `make` returns a fresh,
 * migrated, empty store and `peer` another instance on the same data, as
 * another agent opens it.
 */
export function scheduleStoreConformance(
  name: string,
  make: () => Promise<TaskStore>,
  peer: (store: TaskStore) => Promise<TaskStore>,
): void {
  describe(`schedule store conformance: ${name}`, () => {
    const { fresh, peerOf } = suiteStores(make, peer);
    const schedulers: TaskScheduler[] = [];
    const peers = async (store: TaskStore, n: number) => {
      const out: TaskStore[] = [];
      for (let i = 0; i < n; i++) out.push(await peerOf(store));
      return out;
    };
    // Registered after the stores' own afterEach, so it runs first: schedulers stop before their stores close.
    afterEach(async () => {
      for (const s of schedulers.splice(0)) await s.stop();
    });

    /** The fire times of the tasks a schedule enqueued, from their keys, in order. */
    const firedTimes = async (store: TaskStore, schedule: string): Promise<string[]> =>
      (await store.list({ name: `${schedule}-task`, limit: 1000 }))
        .map((t) => t.uniqueKey ?? '')
        .map((k) => k.replace(`schedule:${schedule}:`, ''))
        .sort();

    it('defines, lists, replaces (keeping the last fire) and removes schedules', async () => {
      const store = await fresh();
      await store.defineSchedules([
        { name: 'nightly', cron: '0 3 * * *', tz: 'Europe/Berlin', task: { name: 'report', args: { full: true } }, backfill: 2 },
        { name: 'a-minutely', cron: '* * * * *', task: { name: 'ping', options: { queue: 'pings', priority: 3 } } },
      ]);
      const [minutely, nightly] = (await store.schedules()) as [ScheduleRecord, ScheduleRecord];
      expect(minutely).toMatchObject({ name: 'a-minutely', cron: '* * * * *', tz: 'UTC', backfill: 0, lastFireAt: null });
      expect(minutely.task).toEqual({ name: 'ping', options: { queue: 'pings', priority: 3 } });
      expect(nightly).toMatchObject({ name: 'nightly', tz: 'Europe/Berlin', backfill: 2, task: { name: 'report', args: { full: true } } });
      expect(Math.abs(nightly.createdAt.getTime() - Date.now())).toBeLessThan(MINUTE);

      const fireAt = new Date(Date.now() - 1000);
      expect(await store.fireSchedule('nightly', fireAt)).toBe('skipped');
      await store.defineSchedules([{ name: 'nightly', cron: '30 4 * * *', task: { name: 'report' } }]);
      const replaced = (await store.schedules()).find((s) => s.name === 'nightly');
      expect(replaced).toMatchObject({ cron: '30 4 * * *', tz: 'UTC', backfill: 0, lastFireAt: fireAt });

      expect(await store.removeSchedule('nightly')).toBe(true);
      expect(await store.removeSchedule('nightly')).toBe(false);
      expect((await store.schedules()).map((s) => s.name)).toEqual(['a-minutely']);
      expect(await store.fireSchedule('nightly', new Date(), { name: 'report' })).toBeNull();
    });

    it('refuses a bad schedule with SF_BAD_SCHEDULE naming the field, and stores none of the batch', async () => {
      const store = await fresh();
      const good: ScheduleDefinition = { name: 'good', cron: '* * * * *', task: { name: 't' } };
      const cases: [ScheduleDefinition, RegExp][] = [
        [{ ...good, name: 'has space' }, /schedule 1: name = "has space"/],
        [{ ...good, cron: '61 * * * *' }, /schedule good: cron = "61 \* \* \* \*".*minute/],
        [{ ...good, tz: 'Mars/Olympus' }, /schedule good: tz = "Mars\/Olympus"/],
        [{ ...good, backfill: -1 }, /schedule good: backfill = -1: must be an integer from 0/],
        [{ ...good, task: { name: '' } }, /schedule good: task: name must be a non-empty string/],
        [{ ...good, task: { name: 't', options: { runAt: new Date() } } }, /schedule good: task: option runAt/],
        [{ ...good, task: { name: 't', options: { maxAttempts: 0 } } }, /schedule good: task: option maxAttempts = 0/],
      ];
      for (const [bad, message] of cases) {
        const error = await rejection(store.defineSchedules([{ ...good, name: 'first' }, bad]));
        expect(error).toBeInstanceOf(FabricError);
        expect(error.code).toBe('SF_BAD_SCHEDULE');
        expect(error.message).toMatch(message);
      }
      expect(await store.schedules()).toEqual([]);
    });

    it('each fire enqueues one task however many stores race on it; a fire at or before the last is a no-op', async () => {
      const store = await fresh();
      const others = await peers(store, 4);
      await store.defineSchedules([{ name: 'race', cron: '* * * * *', task: { name: 'race-task', args: { n: 1 } } }]);
      const base = Math.floor(Date.now() / MINUTE) * MINUTE;
      const fires = [0, 1, 2].map((i) => new Date(base + i * MINUTE));
      for (const fireAt of fires) {
        const task = { name: 'race-task', args: { n: 1 }, options: { uniqueKey: `schedule:race:${fireAt.toISOString()}` } };
        const results = await Promise.all([store, ...others].map((s) => s.fireSchedule('race', fireAt, task)));
        expect(results.filter((r) => r !== null)).toHaveLength(1);
      }
      expect(await firedTimes(store, 'race')).toEqual(fires.map((f) => f.toISOString()));
      // A scheduler that fell behind cannot fire an earlier time again.
      expect(await store.fireSchedule('race', fires[1] as Date, { name: 'race-task' })).toBeNull();
      expect((await store.schedules())[0]?.lastFireAt).toEqual(fires[2]);
      expect(await store.countWhere({ name: 'race-task' })).toBe(3);
    });

    it('schedulers on several agents with one clock: one task per fire; missed fires enqueued on return up to the backfill', async () => {
      const store = await fresh();
      const others = await peers(store, 2);
      await store.defineSchedules([
        { name: 'minutely', cron: '* * * * *', backfill: 2, task: { name: 'minutely-task', options: { queue: 'cron' } } },
      ]);
      const [record] = (await store.schedules()) as [ScheduleRecord];
      const first = (nextFire(record, record.createdAt) as Date).getTime();
      const clock = new FakeClock(first - 1);
      const fired: string[] = [];
      const skipped: [number, string][] = [];
      for (const s of [store, ...others]) {
        schedulers.push(
          startTaskScheduler({
            store: s,
            clock,
            // Passes only when the test asks: the clock is the test's.
            intervalMs: 24 * 60 * MINUTE,
            missedAfterMs: 5000,
            onFired: (_, fireAt, result) => {
              if (!result.duplicate) fired.push(fireAt.toISOString());
            },
            onSkipped: (_, count, upTo) => skipped.push([count, upTo.toISOString()]),
            onError: (error) => {
              throw error;
            },
          }),
        );
      }
      const passAll = () => Promise.all(schedulers.map((s) => s.tick()));
      await passAll();
      expect(await store.countWhere({ name: 'minutely-task' })).toBe(0);
      // Running: each minute's fire, a little late, by whichever scheduler gets there first.
      clock.advance(500);
      await passAll();
      clock.advance(MINUTE);
      await passAll();
      await passAll();
      const at = (n: number) => new Date(first + n * MINUTE).toISOString();
      expect(await firedTimes(store, 'minutely')).toEqual([at(0), at(1)]);
      // Every agent down for ten minutes: fires 2..10 are missed; on return the latest two (the backfill) run.
      clock.advance(9 * MINUTE + 30_000);
      await passAll();
      expect(await firedTimes(store, 'minutely')).toEqual([at(0), at(1), at(9), at(10)]);
      expect(skipped).toEqual([[7, at(8)]]);
      expect(fired.sort()).toEqual([at(0), at(1), at(9), at(10)]);
      // And on from there.
      clock.advance(MINUTE);
      await passAll();
      expect(await firedTimes(store, 'minutely')).toEqual([at(0), at(1), at(9), at(10), at(11)]);
      expect((await store.list({ name: 'minutely-task' }))[0]?.queue).toBe('cron');
    });

    it('a schedule in a time zone fires at its local time across a daylight-saving change', async () => {
      const record = {
        name: 'tz',
        cron: '0 9 * * *',
        tz: 'Europe/Berlin',
      };
      // Berlin moves from UTC+1 to UTC+2 on 2026-03-29.
      expect(nextFire(record, new Date('2026-03-28T12:00:00Z'))?.toISOString()).toBe('2026-03-29T07:00:00.000Z');
      expect(nextFire(record, new Date('2026-03-27T12:00:00Z'))?.toISOString()).toBe('2026-03-28T08:00:00.000Z');
      const store = await fresh();
      await store.defineSchedules([{ ...record, task: { name: 'tz-task' } }]);
      expect((await store.schedules())[0]?.tz).toBe('Europe/Berlin');
    });
  });
}
