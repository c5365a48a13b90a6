/**
 * Ported from GenStage's test/consumer_supervisor_test.exs
 * (elixir-lang/gen_stage at 72198f86c8cd4ba149e8ee2ad80ab442d6d106be),
 * where concurrentConsumer covers ConsumerSupervisor: a child per event is
 * a task per event (run), a child that ends is a task that settles, "the
 * supervisor" is the concurrentConsumer stage. The upstream Consumer
 * module's start_child(:ok2) becomes a task that runs until the test ends
 * it; :error and {:non_local, _} a task that throws; :ignore one that
 * returns at once. which_children/count_children are read from the tasks
 * the test sees running.
 *
 * Departure: ConsumerSupervisor asks again once the children that ended
 * reach min_demand; concurrentConsumer once the freed slots reach
 * maxDemand - minDemand (running tasks have fallen to minDemand, as the
 * ConsumerSupervisor docs put it and as an automatic consumer asks). With
 * the upstream cases' demands both ask at the same points.
 *
 * Not ported (no such features, see README): child_spec, start_link/init
 * validation of child specs and strategies, code_change, start_child,
 * terminate_child, restart strategies and max_restarts (tasks are not
 * restarted), shutdown: :infinity.
 */
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../../../test/support/wait-for.js';
import { concurrentConsumer, FabricError, FakeClock, fromIterable, type StageSystem, type TaskOutcome } from '../../src/index.js';
import { Counter, Inbox, newSystem, tagged } from './stages.js';

/** The upstream Consumer: a ConsumerSupervisor whose children the test can end one by one. */
function harness(inbox: Inbox, options: { drainMs?: number } = {}) {
  let next = 1;
  const children = new Map<number, { end: () => void; signal: AbortSignal }>();
  const outcomes: TaskOutcome<unknown, unknown>[] = [];
  const spec = concurrentConsumer<unknown, unknown>({
    subscribeTo: [],
    ...options,
    onOutcome: (o) => void outcomes.push(o),
    run(event, { signal }) {
      if (event === 'ok2') {
        const child = next++;
        inbox.send(['child_started', child]);
        return new Promise<void>((resolve) => {
          children.set(child, { signal, end: resolve });
          signal.addEventListener('abort', () => inbox.send(['child_down', child, signal.reason]));
        }).finally(() => children.delete(child));
      }
      if (event === 'error') {
        inbox.send('child_start_error');
        throw new Error('found');
      }
      if (event === 'ignore') {
        inbox.send('child_ignore');
        return undefined;
      }
      if (event === 'unknown') {
        inbox.send('child_start_unknown');
        throw new Error('unknown');
      }
      const [, kind] = event as [string, string];
      inbox.send(['child_non_local', kind]);
      throw kind === 'error' ? new Error('oops') : 'oops';
    },
  });
  return {
    spec,
    children,
    outcomes,
    /** assert_kill(child, reason): the child ends and the supervisor sees it. */
    async end(sys: StageSystem, child: number) {
      children.get(child)?.end();
      await sys.idle();
    },
  };
}

describe('ConsumerSupervisorTest (consumer_supervisor_test.exs)', () => {
  describe('sync_subscribe', () => {
    it('returns ok with reference', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const sup = await sys.start(harness(new Inbox()).spec, undefined);
      const p = await sys.start(Counter(), new Inbox());
      await expect(sys.subscribe(sup, { to: p })).resolves.toMatchObject({ producer: p, consumer: sup });
    });

    it('returns errors on bad options', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const sup = await sys.start(harness(new Inbox()).spec, undefined);
      await expect(sys.subscribe(sup, { to: 'whatever', maxDemand: 0 })).rejects.toThrow(
        'option maxDemand = 0: must be a positive integer',
      );
      await expect(sys.subscribe(sup, { to: 'whatever', minDemand: 2000 })).rejects.toThrow('option minDemand = 2000');
      expect(sys.list()).toContain(sup);
    });

    it('supervisor exits when there is no named producer and subscription is permanent (departure: SF_NO_STAGE)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const sup = await sys.start(harness(new Inbox()).spec, undefined);
      await expect(sys.subscribe(sup, { to: 'unknown' })).rejects.toMatchObject({ code: 'SF_NO_STAGE' });
      expect(sys.list()).not.toContain(sup);
    });

    it('supervisor exits when producer is dead and subscription is permanent (departure: SF_NO_STAGE)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const p = await sys.start(Counter(), new Inbox());
      await sys.stop(p);
      const sup = await sys.start(harness(new Inbox()).spec, undefined);
      await expect(sys.subscribe(sup, { to: p })).rejects.toMatchObject({ code: 'SF_NO_STAGE' });
      expect(sys.list()).not.toContain(sup);
    });

    it('supervisor does not exit when there is no named producer and subscription is temporary (departure: subscribe rejects)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const sup = await sys.start(harness(new Inbox()).spec, undefined);
      await expect(sys.subscribe(sup, { to: 'unknown', cancel: 'temporary' })).rejects.toMatchObject({ code: 'SF_NO_STAGE' });
      expect(sys.list()).toContain(sup);
    });

    it('supervisor does not exit when producer is dead and subscription is temporary (departure: subscribe rejects)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const p = await sys.start(Counter(), new Inbox());
      await sys.stop(p);
      const sup = await sys.start(harness(new Inbox()).spec, undefined);
      await expect(sys.subscribe(sup, { to: p, cancel: 'temporary' })).rejects.toMatchObject({ code: 'SF_NO_STAGE' });
      expect(sys.list()).toContain(sup);
    });
  });

  describe('supervisor consuming start args', () => {
    it('start child', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary' });

      await sys.call(p, ['queue', ['ok2']]);
      await inbox.assertReceive(['child_started', 1]);
      expect([...h.children.keys()]).toEqual([1]);

      await sys.call(p, ['queue', ['ok2']]);
      await inbox.assertReceive(['child_started', 2]);
      expect(h.children.size).toBe(2);

      await sys.call(p, ['queue', ['error']]);
      await inbox.assertReceive('child_start_error');
      await sys.idle();
      expect([...h.children.keys()]).toEqual([1, 2]);

      await sys.call(p, ['queue', ['ignore']]);
      await inbox.assertReceive('child_ignore');
      await sys.idle();
      expect([...h.children.keys()]).toEqual([1, 2]);

      await sys.call(p, ['queue', ['unknown']]);
      await inbox.assertReceive('child_start_unknown');
      await sys.idle();
      expect([...h.children.keys()]).toEqual([1, 2]);
      expect(h.outcomes.map((o) => [o.event, o.status])).toEqual([
        ['error', 'error'],
        ['ignore', 'success'],
        ['unknown', 'error'],
      ]);
    });

    it('start child with stream', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      const p = await sys.start(fromIterable(['ok2', 'ok2', 'ok2']), undefined);
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary' });
      await inbox.assertReceive(['child_started', 1]);
      await inbox.assertReceive(['child_started', 2]);
      await inbox.assertReceive(['child_started', 3]);
    });

    it('start child with throw/error/exit', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary' });
      for (const kind of ['throw', 'error', 'exit']) {
        await sys.call(p, ['queue', [['non_local', kind]]]);
        await inbox.assertReceive(['child_non_local', kind]);
        await sys.idle();
        expect(h.children.size).toBe(0);
      }
      expect(h.outcomes.map((o) => o.status)).toEqual(['error', 'error', 'error']);
      expect(sys.list()).toContain(sup);
    });

    it('start child limited by max_demand', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary', maxDemand: 1, minDemand: 0 });

      await sys.call(p, ['queue', ['ok2', 'error', 'ignore', 'ok2', 'ok2', 'ok2']]);
      await inbox.assertReceive(['child_started', 1]);
      await sys.idle();
      expect([...h.children.keys()]).toEqual([1]);
      inbox.refuteReceived('child_start_error');

      await h.end(sys, 1);
      await inbox.assertReceive('child_start_error');
      await inbox.assertReceive('child_ignore');
      await inbox.assertReceive(['child_started', 2]);
      expect([...h.children.keys()]).toEqual([2]);
      inbox.refuteReceived(['child_started', 3]);

      await h.end(sys, 2);
      await inbox.assertReceive(['child_started', 3]);
      expect([...h.children.keys()]).toEqual([3]);
      inbox.refuteReceived(['child_started', 4]);
    });

    it('children remain after producer down', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary', maxDemand: 2, minDemand: 0 });

      await sys.call(p, ['queue', ['ok2', 'ok2']]);
      await inbox.assertReceive(['child_started', 1]);
      await inbox.assertReceive(['child_started', 2]);
      expect(h.children.size).toBe(2);

      await sys.stop(p, 'shutdown');
      await sys.idle();
      expect(h.children.size).toBe(2);
      await h.end(sys, 1);
      expect([...h.children.keys()]).toEqual([2]);
      await h.end(sys, 2);
      expect(h.children.size).toBe(0);
      expect(sys.list()).toContain(sup);
    });

    it('ask for more events when count reaches min_demand (high)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary', maxDemand: 3, minDemand: 2 });

      await sys.call(p, ['queue', ['ok2', 'ok2', 'ok2']]);
      await inbox.assertReceive(['child_started', 1]);
      await inbox.assertReceive(['child_started', 2]);
      await inbox.assertReceive(['child_started', 3]);
      expect(h.children.size).toBe(3);

      await h.end(sys, 1);
      await h.end(sys, 2);
      expect(h.children.size).toBe(1);

      await sys.call(p, ['queue', ['ok2']]);
      await inbox.assertReceive(['child_started', 4]);
      await sys.call(p, ['queue', ['ok2']]);
      await inbox.assertReceive(['child_started', 5]);
      expect(h.children.size).toBe(3);

      await sys.call(p, ['queue', ['ok2']]);
      await sys.idle();
      inbox.refuteReceived(['child_started', 6]);
    });

    it('ask for more events when count reaches min_demand (low)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      // Upstream, a bare process answers the ask of 3 with two events and raises on any further ask.
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      const sub = await sys.subscribe(sup, { to: p, cancel: 'temporary', maxDemand: 3, minDemand: 0 });
      await sys.call(p, ['queue', ['ok2', 'ok2']]);
      await inbox.assertReceive(['child_started', 1]);
      await inbox.assertReceive(['child_started', 2]);
      await sys.idle();
      inbox.refuteReceived(['child_started', 3]);
      // Two tasks run and none has ended: nothing was asked beyond the first 3.
      expect(sys.stats(p).downstream.find((d) => d.id === sub.id)?.asked).toBe(3);
    });
  });

  describe('terminate/2 (how running children end when the supervisor stops)', () => {
    it('terminates children with brutal kill (drainMs 0: every running task is aborted at once)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox);
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary' });
      await sys.call(p, ['queue', ['ok2', 'ok2', 'ok2']]);
      await inbox.assertReceive(['child_started', 3]);
      await sys.stop(sup, 'shutdown');
      for (const child of [1, 2, 3]) {
        const [, , reason] = (await inbox.assertReceive((m: unknown) => Array.isArray(m) && m[0] === 'child_down' && m[1] === child)) as [
          string,
          number,
          unknown,
        ];
        expect(reason).toBeInstanceOf(FabricError);
        expect(reason).toMatchObject({ code: 'SF_STAGE_EXITED' });
      }
    });

    it('terminates children with integer shutdown (drainMs: running tasks may finish and are recorded)', async () => {
      const sys = newSystem({ clock: new FakeClock() });
      const inbox = new Inbox();
      const h = harness(inbox, { drainMs: 60_000 });
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary' });
      await sys.call(p, ['queue', ['ok2', 'ok2', 'ok2']]);
      await inbox.assertReceive(['child_started', 3]);
      const stopped = sys.stop(sup, 'shutdown');
      // The stage drains: the children end on their own and their outcomes are recorded.
      for (const child of [1, 2, 3]) h.children.get(child)?.end();
      await stopped;
      expect(h.outcomes.map((o) => o.status)).toEqual(['success', 'success', 'success']);
      inbox.refuteReceived(tagged('child_down'));
    });

    it('terminates children with expired integer shutdown (drainMs: tasks still running when it expires are aborted)', async () => {
      const clock = new FakeClock();
      const sys = newSystem({ clock });
      const inbox = new Inbox();
      const h = harness(inbox, { drainMs: 1 });
      const p = await sys.start(Counter(), new Inbox());
      const sup = await sys.start(h.spec, undefined);
      await sys.subscribe(sup, { to: p, cancel: 'temporary' });
      await sys.call(p, ['queue', ['ok2', 'ok2', 'ok2']]);
      await inbox.assertReceive(['child_started', 3]);
      const stopped = sys.stop(sup, 'shutdown');
      // Child 2 ends in time; 1 and 3 do not. The drain's deadline is on the stage's clock: it passes once 2 is recorded.
      h.children.get(2)?.end();
      await waitFor(() => h.outcomes.length === 1, 'child 2 to be recorded');
      clock.advance(1);
      await stopped;
      await inbox.assertReceive((m: unknown) => Array.isArray(m) && m[0] === 'child_down' && m[1] === 1);
      await inbox.assertReceive((m: unknown) => Array.isArray(m) && m[0] === 'child_down' && m[1] === 3);
      inbox.refuteReceived((m: unknown) => Array.isArray(m) && m[0] === 'child_down' && m[1] === 2);
      expect(h.outcomes.map((o) => o.status)).toEqual(['success']);
    });
  });
});
