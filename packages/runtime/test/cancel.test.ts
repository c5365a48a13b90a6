import { describe, expect, it } from 'vitest';
import { type CancelInfo, type CancelMode, consumer, producer, StageSystem, type SystemEvent } from '../src/index.js';
import { counter, pushProducer, recorder, recordingConsumer } from './fixtures.js';

async function whenProducerExits(cancel: CancelMode, reason: unknown) {
  const sys = new StageSystem();
  const exits: SystemEvent[] = [];
  sys.on('event', (e) => e.type === 'stage-exit' && exits.push(e));
  const p = await sys.start(pushProducer(), undefined, { name: 'p' });
  const rec = recorder<unknown>();
  const c = await sys.start(recordingConsumer(rec, [{ to: 'p', cancel }]), undefined, { name: 'c' });
  await sys.idle();
  await sys.stop(p, reason as never);
  await sys.idle();
  return { consumerAlive: sys.whereis('c') !== undefined, cancels: rec.cancels, exits, c };
}

describe('cancel modes when the producer exits', () => {
  it.each([
    ['permanent', 'normal', false],
    ['permanent', 'shutdown', false],
    ['permanent', 'boom', false],
    ['transient', 'normal', true],
    ['transient', 'shutdown', true],
    ['transient', 'boom', false],
    ['temporary', 'normal', true],
    ['temporary', 'boom', true],
  ] as const)('%s subscription, producer exits with %s: consumer alive = %s', async (cancel, reason, alive) => {
    const r = await whenProducerExits(cancel, reason);
    expect(r.cancels).toEqual([{ kind: 'down', reason }]);
    expect(r.consumerAlive).toBe(alive);
    if (!alive) expect(r.exits.find((e) => e.type === 'stage-exit' && e.stage === 'c')).toMatchObject({ reason });
  });

  it('transient treats { shutdown: detail } as a clean exit', async () => {
    const r = await whenProducerExits('transient', { shutdown: 'maintenance' });
    expect(r.consumerAlive).toBe(true);
  });
});

describe('cancel from either side', () => {
  it('a consumer that cancels its subscription gets handleCancel(cancel) and follows its mode; the producer sees cancel too', async () => {
    const sys = new StageSystem();
    const producerCancels: CancelInfo[] = [];
    await sys.start(
      producer<null, number>({
        init: () => ({ state: null }),
        handleDemand: () => undefined,
        handleCancel(info) {
          producerCancels.push(info);
        },
      }),
      undefined,
      { name: 'p' },
    );
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', cancel: 'temporary' }]), undefined, { name: 'c' });
    await sys.idle();
    const [sub] = sys.subscriptionsOf('c');
    sys.cancel(sub!, 'enough');
    await sys.idle();
    expect(producerCancels).toEqual([{ kind: 'cancel', reason: 'enough' }]);
    expect(rec.cancels).toEqual([{ kind: 'cancel', reason: 'enough' }]);
    expect(sys.whereis('c')).toBeDefined();
    expect(sys.subscriptionsOf('c')).toEqual([]);
    expect(sys.stats('p').downstream).toEqual([]);
  });

  it('a permanent consumer that cancels exits with the cancel reason, as in GenStage', async () => {
    const sys = new StageSystem();
    await sys.start(pushProducer(), undefined, { name: 'p' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, ['p']), undefined, { name: 'c' });
    await sys.idle();
    sys.cancel(sys.subscriptionsOf('c')[0]!, 'normal');
    await sys.idle();
    expect(sys.whereis('c')).toBeUndefined();
    expect(sys.whereis('p')).toBeDefined();
  });

  it('when a consumer exits the producer gets handleCancel(down) and keeps serving the others', async () => {
    const sys = new StageSystem();
    const producerCancels: CancelInfo[] = [];
    await sys.start(
      producer<number, number>({
        init: () => ({ state: 0 }),
        handleDemand(demand, next) {
          return { events: Array.from({ length: demand }, (_, i) => next + i), state: next + demand };
        },
        handleCancel(info) {
          producerCancels.push(info);
        },
      }),
      undefined,
      { name: 'p' },
    );
    const a = await sys.start(
      consumer<null, number>({
        init: () => ({ state: null, subscribeTo: [{ to: 'p', maxDemand: 2, minDemand: 1 }] }),
        handleEvents: () => ({ stop: new Error('crashed on purpose') }),
      }),
      undefined,
    );
    await sys.idle();
    expect(sys.whereis('p')).toBeDefined();
    expect(producerCancels).toHaveLength(1);
    expect(producerCancels[0]?.kind).toBe('down');
    expect(producerCancels[0]?.reason).toMatchObject({ message: 'crashed on purpose' });
    expect(a).toBeDefined();
  });

  it('a producer can cancel a consumer; the consumer follows its mode', async () => {
    const sys = new StageSystem();
    await sys.start(
      producer<null, number>({
        init: () => ({ state: null }),
        handleDemand: () => undefined,
        handleSubscribe(side, _o, subscription, _s, ctx) {
          if (side === 'consumer') ctx.cancel(subscription, 'not welcome');
        },
      }),
      undefined,
      { name: 'p' },
    );
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', cancel: 'temporary' }]), undefined, { name: 'c' });
    await sys.idle();
    expect(rec.cancels).toEqual([{ kind: 'cancel', reason: 'not welcome' }]);
    expect(sys.whereis('c')).toBeDefined();
  });

  it('subscribing to a stage that does not exist fails a permanent consumer and rejects a temporary subscribe', async () => {
    const sys = new StageSystem();
    await expect(sys.start(recordingConsumer(recorder(), ['nobody']), undefined)).rejects.toMatchObject({ code: 'SF_NO_STAGE' });
    const c = await sys.start(recordingConsumer(recorder()), undefined, { name: 'c' });
    await expect(sys.subscribe(c, { to: 'nobody', cancel: 'temporary' })).rejects.toMatchObject({ code: 'SF_NO_STAGE' });
    expect(sys.whereis('c')).toBeDefined();
  });

  it('events already sent to a consumer are not lost when the producer then exits', async () => {
    const sys = new StageSystem();
    await sys.start(counter({ limit: 7 }), 0, { name: 'p' });
    const rec = recorder<number>();
    await sys.start(recordingConsumer(rec, [{ to: 'p', maxDemand: 10, cancel: 'transient' }]), undefined);
    await sys.idle();
    sys.stop('p');
    await sys.idle();
    expect(rec.events()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(rec.cancels).toEqual([{ kind: 'down', reason: 'normal' }]);
  });
});

describe('producers of one group (the replicas of a stage)', () => {
  async function twoReplicas(cancel: CancelMode = 'permanent') {
    const sys = new StageSystem();
    const exits: SystemEvent[] = [];
    sys.on('event', (e) => e.type === 'stage-exit' && exits.push(e));
    const p0 = await sys.start(pushProducer(), undefined, { name: 'p/0' });
    const p1 = await sys.start(pushProducer(), undefined, { name: 'p/1' });
    const rec = recorder<number>();
    await sys.start(
      recordingConsumer(rec, [
        { to: 'p/0', group: 'p', cancel },
        { to: 'p/1', group: 'p', cancel },
      ]),
      undefined,
      { name: 'c' },
    );
    await sys.idle();
    return { sys, exits, p0, p1, rec };
  }

  it('a clean exit of one is followed only once the last has gone, so the events of the others still arrive', async () => {
    const { sys, exits, p0, p1, rec } = await twoReplicas();
    await sys.stop(p0, 'normal');
    await sys.idle();
    expect(sys.whereis('c')).toBeDefined();
    sys.cast(p1, ['emit', [1, 2, 3]]);
    await sys.idle();
    expect(rec.events()).toEqual([1, 2, 3]);
    await sys.stop(p1, 'normal');
    await sys.idle();
    expect(sys.whereis('c')).toBeUndefined();
    expect(exits.find((e) => e.type === 'stage-exit' && e.stage === 'c')).toMatchObject({ reason: 'normal' });
  });

  it('an abnormal exit of any is followed at once', async () => {
    const { sys, exits, p0 } = await twoReplicas();
    await sys.stop(p0, 'boom');
    await sys.idle();
    expect(sys.whereis('c')).toBeUndefined();
    expect(exits.find((e) => e.type === 'stage-exit' && e.stage === 'c')).toMatchObject({ reason: 'boom' });
  });

  it('a group must be a non-empty string', async () => {
    const sys = new StageSystem();
    await sys.start(pushProducer(), undefined, { name: 'p' });
    await expect(sys.start(recordingConsumer(recorder(), [{ to: 'p', group: '' }]), undefined)).rejects.toThrow(
      /option group = "": must be a non-empty string/,
    );
  });
});
