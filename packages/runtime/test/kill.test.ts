import { describe, expect, it } from 'vitest';
import { type CancelMode, consumer, producer, StageSystem, type Subscription, Supervisor, type SystemEvent } from '../src/index.js';
import { pushProducer, recorder, recordingConsumer, waitFor } from './fixtures.js';

describe('StageSystem.kill (Process.exit(pid, :kill))', () => {
  it.each([
    ['permanent', false],
    ['transient', false],
    ['temporary', true],
  ] as const)('a killed producer: its %s consumer sees down with reason killed; alive = %s', async (cancel: CancelMode, alive) => {
    const sys = new StageSystem();
    const exits: SystemEvent[] = [];
    sys.on('event', (e) => e.type === 'stage-exit' && exits.push(e));
    await sys.start(pushProducer(), undefined, { name: 'p' });
    const rec = recorder<unknown>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', cancel }]), undefined, { name: 'c' });
    await sys.idle();
    sys.kill('p');
    await sys.idle();
    expect(rec.cancels).toEqual([{ kind: 'down', reason: 'killed' }]);
    expect(sys.whereis('c') !== undefined).toBe(alive);
    expect(exits.find((e) => e.type === 'stage-exit' && e.stage === 'p')).toEqual({
      type: 'stage-exit',
      stage: 'p',
      reason: 'killed',
      clean: false,
    });
    if (!alive) expect(exits.find((e) => e.type === 'stage-exit' && e.stage === 'c')).toMatchObject({ reason: 'killed', clean: false });
  });

  it('skips the mailbox and terminate: queued messages are not handled, a waiting call fails', async () => {
    const sys = new StageSystem();
    const handled: unknown[] = [];
    const terminated: unknown[] = [];
    await sys.start(
      producer<null, number>({
        init: () => ({ state: null }),
        handleDemand: () => undefined,
        handleCast(message) {
          handled.push(message);
        },
        handleCall: () => ({ reply: 'answered' }),
        terminate(reason) {
          terminated.push(reason);
        },
      }),
      undefined,
      { name: 'p' },
    );
    // Queued in the same turn, before the stage gets to its mailbox.
    sys.cast('p', 'first');
    sys.cast('p', 'second');
    const call = sys.call('p', 'question');
    sys.kill('p');
    await expect(call).rejects.toMatchObject({ code: 'SF_NO_STAGE' });
    await sys.idle();
    expect(handled).toEqual([]);
    expect(terminated).toEqual([]);
    expect(sys.whereis('p')).toBeUndefined();
  });

  it('a killed consumer: its producer sees down with reason killed and keeps serving the others', async () => {
    const sys = new StageSystem();
    const producerCancels: unknown[] = [];
    await sys.start(
      producer<number, number>({
        init: () => ({ state: 0 }),
        handleDemand: (demand, next) => ({ events: Array.from({ length: demand }, (_, i) => next + i), state: next + demand }),
        handleCancel(info) {
          producerCancels.push(info);
        },
      }),
      undefined,
      { name: 'p' },
    );
    let gate: () => void = () => {};
    const stuck = new Promise<void>((resolve) => {
      gate = resolve;
    });
    const busyGot: number[][] = [];
    await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'p', maxDemand: 5 }] }),
        // Busy in a callback when it is killed: what the callback returns later is ignored.
        handleEvents: (events) => {
          busyGot.push(events);
          return stuck.then(() => ({ stop: 'normal' as const }));
        },
      }),
      undefined,
      { name: 'busy' },
    );
    await waitFor(() => busyGot.length === 1, 'the busy consumer to be in its callback');
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p' }], { manual: true }), undefined);
    // Not sys.idle(): the busy consumer is in its callback until the gate opens.
    await waitFor(() => sys.stats('p').downstream.length === 2, 'both subscriptions to reach the producer');
    sys.kill('busy');
    gate();
    await sys.idle();
    expect(producerCancels).toEqual([{ kind: 'down', reason: 'killed' }]);
    sys.ask(rec.subscriptions[0] as Subscription, 3);
    await sys.idle();
    expect(rec.batches).toEqual([[5, 6, 7]]);
    expect(sys.whereis('p')).toBeDefined();
  });

  it('a supervisor restarts a killed child: killed is not a clean exit', async () => {
    const sys = new StageSystem();
    const sup = await Supervisor.start(sys, [{ id: 'p', name: 'p', spec: pushProducer(), restart: 'transient' }]);
    const first = sys.whereis('p');
    sys.kill('p');
    await sys.idle();
    await sup.settled();
    expect(sys.whereis('p')).toBeDefined();
    expect(sys.whereis('p')).not.toBe(first);
    expect(sup.list().map((c) => c.restarts)).toEqual([1]);
    await sup.stop();
  });

  it('killing a stage that is not running does nothing', async () => {
    const sys = new StageSystem();
    expect(() => sys.kill('nobody')).not.toThrow();
    await sys.start(pushProducer(), undefined, { name: 'p' });
    await sys.stop('p');
    expect(() => sys.kill('p')).not.toThrow();
  });
});
