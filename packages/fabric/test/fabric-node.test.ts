import { consumer, isFabricError, producer, StageSystem } from '@stagefabric/runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { type FabricEvent, FabricNode, MemoryFabric, MemoryTransport, type WireMessage } from '../src/index.js';

/** Integers from 0, never beyond demand; `size` pads each event to that many characters. */
const counter = producer<number, string, { size: number }>({
  init: () => ({ state: 0 }),
  handleDemand(demand, next) {
    return { events: Array.from({ length: demand }, (_, i) => String(next + i)), state: next + demand };
  },
});

const big = producer<number, string, { size: number }>({
  init: () => ({ state: 0 }),
  handleDemand(demand, next, _ctx) {
    return { events: Array.from({ length: demand }, () => 'x'.repeat(5000)), state: next + demand };
  },
});

const closing: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closing.splice(0)) await close();
});

/** Node `a` hosting the producer `counter`, on a fabric of its own. */
async function producerNode(fabric: MemoryFabric, options: { maxEntryBytes?: number; spec?: typeof counter } = {}) {
  const system = new StageSystem();
  const transport = new MemoryTransport({
    fabric,
    ...(options.maxEntryBytes === undefined ? {} : { maxEntryBytes: options.maxEntryBytes }),
  });
  const node = new FabricNode({ node: 'a', transport, system, heartbeatMs: 50 });
  const events: FabricEvent[] = [];
  node.on('event', (e) => events.push(e));
  await node.open(['counter']);
  await system.start(options.spec ?? counter, { size: 1 }, { name: 'counter' });
  await node.ready();
  closing.push(async () => {
    await node.close();
    await system.shutdown('shutdown');
  });
  return { node, events, letters: () => events.flatMap((e) => (e.type === 'dead-letter' ? [e.letter] : [])) };
}

/** Node `b`, played by hand: it beats as `incarnation` and records what reaches its consumer's inbox. */
async function consumerSide(fabric: MemoryFabric, incarnation = 'b1') {
  const transport = new MemoryTransport({ fabric });
  const wire: WireMessage[] = [];
  await transport.open(['recorder@b'], (entry) => {
    wire.push(entry.message);
    transport.ack(entry.inbox, [entry.entryId]);
  });
  await transport.beat('b', incarnation, 60_000);
  closing.push(() => transport.close());
  const key = 'recorder@b>counter@a';
  const received = (epoch: number) => wire.reduce((n, m) => n + (m.t === 'events' && m.epoch === epoch ? m.events.length : 0), 0);
  return {
    transport,
    wire,
    key,
    received,
    subscribe: (epoch: number, maxDemand = 10, from = incarnation) =>
      transport.send('counter@a', { t: 'subscribe', key, epoch, consumer: 'recorder@b', incarnation: from, options: { maxDemand } }),
    ask: (epoch: number, hwm: number) => transport.send('counter@a', { t: 'ask', key, epoch, hwm }),
  };
}

describe('a fabric node refuses what breaks the fabric’s terms', () => {
  it('an ask beyond the subscription’s maxDemand is dead-lettered and counted; asks within it are served', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric);
    const b = await consumerSide(fabric);
    b.subscribe(1);
    b.ask(1, 10);
    await waitFor(() => b.received(1) === 10, 'ten events');
    b.ask(1, 1_000_000);
    await waitFor(() => a.letters().length === 1, 'the refusal');
    expect(a.letters()[0]).toMatchObject({ kind: 'refused', inbox: 'counter@a' });
    expect(a.letters()[0]?.reason).toMatch(/for 999990 events beyond the subscription's maxDemand of 10/);
    expect(a.node.stats.refusedAsks).toBe(1);
    b.ask(1, 20);
    await waitFor(() => b.received(1) === 20, 'ten more, within demand');
    expect(fabric.deadLetters).toHaveLength(1);
  });

  it('a manual-demand consumer that asks beyond maxDemand gets every event; the wire never carries an ask beyond it', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric);
    let nodeB: FabricNode | undefined;
    const system = new StageSystem({ resolve: (name) => nodeB?.resolve(name) });
    nodeB = new FabricNode({ node: 'b', transport: new MemoryTransport({ fabric }), system, heartbeatMs: 50 });
    const b = nodeB;
    closing.push(async () => {
      await b.close();
      await system.shutdown('shutdown');
    });
    await b.open(['greedy']);
    const seen: string[] = [];
    await system.start(
      consumer<null, string>({
        init: () => ({ state: null, subscribeTo: [{ to: 'counter@a', maxDemand: 10 }] }),
        handleSubscribe(_side, _options, subscription, _state, ctx) {
          ctx.ask(subscription, 55);
          return { demand: 'manual' };
        },
        handleEvents(events) {
          seen.push(...events);
        },
      }),
      undefined,
      { name: 'greedy' },
    );
    await b.ready();
    await waitFor(() => seen.length === 55, 'the 55 events asked for');
    expect(seen).toEqual(Array.from({ length: 55 }, (_, i) => String(i)));
    expect(a.node.stats.refusedAsks).toBe(0);
    expect(a.letters()).toEqual([]);
  });

  it('a late ask for a subscription that ended, from a node still alive, is dropped without a dead letter', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric);
    const b = await consumerSide(fabric);
    b.subscribe(1);
    b.ask(1, 10);
    await waitFor(() => b.received(1) === 10, 'ten events');
    b.transport.send('counter@a', { t: 'cancel', key: b.key, epoch: 1, from: 'consumer', kind: 'cancel', reason: 'normal' });
    b.ask(1, 20);
    // A refused message after them: once it is dead-lettered, the inbox has been handled up to it.
    b.transport.send('counter@a', { t: 'ask', key: 'recorder@b>other@a', epoch: 1, hwm: 1 });
    await waitFor(() => a.letters().length === 1, 'the marker refused');
    expect(a.letters()[0]?.reason).toMatch(/recorder@b>other@a/);
    expect(b.received(1)).toBe(10);
  });

  it('a subscribe is taken only from a node beating as the incarnation that subscribed', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric);
    const b = await consumerSide(fabric, 'b2');
    // An incarnation that is not the one beating (an earlier run of b, or a forgery), then one from a node with no beat.
    b.subscribe(1, 10, 'b1');
    b.transport.send('counter@a', {
      t: 'subscribe',
      key: 'ghost@z>counter@a',
      epoch: 1,
      consumer: 'ghost@z',
      incarnation: 'z1',
      options: {},
    });
    b.transport.send('counter@a', { t: 'ask', key: 'ghost@z>counter@a', epoch: 1, hwm: 5 });
    await waitFor(() => a.letters().length === 3, 'three refusals');
    expect(a.letters().map((l) => l.reason)).toEqual([
      expect.stringMatching(/subscribe from recorder@b: node b is not alive \(the incarnation beating is b2, not b1\)/),
      expect.stringMatching(/subscribe from ghost@z: node z is not alive \(it has no heartbeat\)/),
      expect.stringMatching(/ask for ghost@z>counter@a: no such subscription, and node z is not alive/),
    ]);
    b.subscribe(2, 10, 'b2');
    b.ask(2, 10);
    await waitFor(() => b.received(2) === 10, 'the live incarnation served');
  });

  it('a message that came through an inbox its key does not concern is refused', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric);
    const b = await consumerSide(fabric);
    b.transport.send('counter@a', { t: 'ask', key: 'recorder@b>other@a', epoch: 1, hwm: 5 });
    await waitFor(() => a.letters().length === 1, 'the refusal');
    expect(a.letters()[0]?.reason).toBe('subscription recorder@b>other@a does not concern counter@a, whose inbox it came through');
  });

  it('a consumer node that stops beating loses its subscriptions, though this node never saw it alive in a check', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric);
    const b = await consumerSide(fabric);
    b.subscribe(1);
    b.ask(1, 10);
    await waitFor(() => b.received(1) === 10, 'ten events');
    fabric.heartbeats.delete('b');
    await waitFor(() => a.events.some((e) => e.type === 'node-down' && e.node === 'b'), 'node b counted down');
    b.ask(1, 20);
    await waitFor(() => a.letters().length === 1, 'the late ask refused: no subscription, node not alive');
    expect(b.received(1)).toBe(10);
  });

  it('a heartbeat value that is not a beat, or a beat of an earlier incarnation, is no news; a later incarnation is a restart', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric);
    const b = await consumerSide(fabric, 'b1');
    b.subscribe(1);
    b.ask(1, 10);
    await waitFor(() => b.received(1) === 10, 'ten events');
    const downs = () => a.events.filter((e) => e.type === 'node-down');
    const refused = () => a.events.filter((e) => e.type === 'heartbeat-refused');
    fabric.writeHeartbeat('b', 'garbage', 60_000);
    await waitFor(() => refused().length > 0, 'the garbage refused');
    // An earlier incarnation's beat, as a stale writer would leave it.
    const earlier = JSON.stringify({ node: 'b', incarnation: 'b0', startedAtMs: 1, atMs: Date.now(), ttlMs: 60_000 });
    fabric.writeHeartbeat('b', earlier, 60_000);
    await waitFor(
      () => refused().some((e) => e.type === 'heartbeat-refused' && /started before b1/.test(e.reason)),
      'the stale beat refused',
    );
    expect(downs()).toEqual([]);
    b.ask(1, 20);
    await waitFor(() => b.received(1) === 20, 'the subscription goes on');
    // The node restarts: a later incarnation's beat ends what the earlier one made.
    const later = new MemoryTransport({ fabric });
    closing.push(() => later.close());
    await later.beat('b', 'b9', 60_000);
    await waitFor(() => downs().length === 1, 'the restart');
    expect(downs()[0]).toMatchObject({ node: 'b', reason: 'restarted' });
  });

  it('held events are bounded in bytes; events for a producer no stage here subscribes to are refused', async () => {
    const fabric = new MemoryFabric();
    const transport = new MemoryTransport({ fabric });
    const node = new FabricNode({ node: 'n', transport, system: new StageSystem(), maxOrphanBytes: 30_000, heartbeatMs: 50 });
    const events: FabricEvent[] = [];
    node.on('event', (e) => events.push(e));
    closing.push(() => node.close());
    await node.open(['c']);
    // At boot, events for the consumer's next subscription are held, up to 30 000 bytes.
    const sender = new MemoryTransport({ fabric });
    for (let seq = 0; seq < 5; seq++) sender.send('c@n', { t: 'events', key: 'c@n>p@m', epoch: 1, seq, events: ['x'.repeat(10_000)] });
    await waitFor(() => events.filter((e) => e.type === 'orphans-dropped').length === 3, 'the oldest dropped');
    expect(node.stats.heldBytes).toBeLessThanOrEqual(30_000);
    expect(node.stats.heldEvents).toBe(2);
    // No stage of this node subscribes to p@m: once a heartbeat's life has passed, what is held is dead-lettered.
    await node.ready();
    await waitFor(() => fabric.deadLetters.length === 2, 'the held events dead-lettered');
    expect(fabric.deadLetters.map((d) => d.kind)).toEqual(['refused', 'refused']);
    expect(node.stats.heldBytes).toBe(0);
    // After boot, they are refused as they arrive.
    sender.send('c@n', { t: 'events', key: 'c@n>p@m', epoch: 2, seq: 0, events: [1] });
    await waitFor(() => fabric.deadLetters.length === 3, 'refused at once');
    expect(fabric.deadLetters[2]?.reason).toBe('events for c@n>p@m: no stage of this node subscribes to p@m');
  });

  it('a message that cannot be sent ends its subscription: the consumer is told noconnection and subscribes anew', async () => {
    const fabric = new MemoryFabric();
    const a = await producerNode(fabric, { maxEntryBytes: 4096, spec: big });
    const b = await consumerSide(fabric);
    b.subscribe(1);
    b.ask(1, 3);
    await waitFor(() => b.wire.some((m) => m.t === 'cancel'), 'the cancel');
    expect(b.wire.find((m) => m.t === 'cancel')).toMatchObject({ from: 'producer', kind: 'down', reason: 'noconnection', epoch: 1 });
    expect(a.events.find((e) => e.type === 'send-failed')).toMatchObject({ inbox: 'recorder@b', key: b.key });
  });
});

describe('a node name is one node’s', () => {
  it('open waits out the beat of an earlier run of the node, then takes the name', async () => {
    const fabric = new MemoryFabric();
    // The earlier run, killed: its beat lives on for 300 ms, renewed by nobody.
    const earlier = new MemoryTransport({ fabric });
    await earlier.beat('a', 'killed', 300);
    const node = new FabricNode({ node: 'a', transport: new MemoryTransport({ fabric }), system: new StageSystem(), heartbeatMs: 50 });
    const events: FabricEvent[] = [];
    node.on('event', (e) => events.push(e));
    closing.push(() => node.close());
    const started = Date.now();
    await node.open([]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
    expect(events.find((e) => e.type === 'name-wait')).toMatchObject({ incarnation: 'killed' });
    expect((await earlier.alive(['a'])).get('a')).toBe(node.incarnation);
  });

  it('open fails with SF_NODE_NAME_TAKEN while a live node beats under the name', async () => {
    const fabric = new MemoryFabric();
    const first = new FabricNode({ node: 'a', transport: new MemoryTransport({ fabric }), system: new StageSystem(), heartbeatMs: 50 });
    closing.push(() => first.close());
    await first.open([]);
    const second = new FabricNode({ node: 'a', transport: new MemoryTransport({ fabric }), system: new StageSystem(), heartbeatMs: 50 });
    closing.push(() => second.close());
    const error = await second.open([]).catch((e: unknown) => e);
    expect(isFabricError(error, 'SF_NODE_NAME_TAKEN')).toBe(true);
    expect((error as Error).message).toMatch(/^node name "a" is taken: a live node beats under it \(incarnation /);
    expect((await new MemoryTransport({ fabric }).alive(['a'])).get('a')).toBe(first.incarnation);
  });

  it('a node name must be a name', () => {
    for (const bad of ['', 'a b', 'x@y', 'a>b', 'é', 'a'.repeat(64)]) {
      expect(
        () => new FabricNode({ node: bad, transport: new MemoryTransport({ fabric: new MemoryFabric() }), system: new StageSystem() }),
      ).toThrow(/must be 1 to 63 letters, digits/);
    }
  });
});
