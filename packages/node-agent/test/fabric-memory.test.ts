import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type FabricEvent, FabricNode, MemoryFabric, MemoryTransport, type WireMessage } from '@stagefabric/fabric';
import { FakeClock, StageSystem } from '@stagefabric/runtime';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { Agent, parseTopology } from '../src/index.js';
import { exits, gates, records } from './fixtures/stages.js';

const FIXTURES = resolve(import.meta.dirname, 'fixtures/topology.yaml');
const silent = pino({ level: 'silent' });
const agents: Agent[] = [];
const HEARTBEAT_MS = 50;

/**
 * One fabric on a fake clock: heartbeats, liveness and cut-off detection
 * move only when the test moves time. Events flow on their own (the
 * in-process transport delivers on later turns of the event loop).
 */
function fakeFabric(): { fabric: MemoryFabric; clock: FakeClock; beat(): void } {
  const clock = new FakeClock(1_000_000);
  return { fabric: new MemoryFabric(() => clock.now()), clock, beat: () => clock.advance(HEARTBEAT_MS) };
}

async function agent(
  { fabric, clock }: { fabric: MemoryFabric; clock: FakeClock },
  node: string,
  yaml: string,
  demandAudit?: string,
): Promise<Agent> {
  const a = await Agent.start({
    topology: parseTopology(yaml, FIXTURES),
    node,
    logger: silent,
    transport: new MemoryTransport({ fabric }),
    heartbeatMs: HEARTBEAT_MS,
    clock,
    demandAudit,
  });
  agents.push(a);
  return a;
}

/** Polls `condition`, moving the fabric's clock one heartbeat before each look. */
function beatUntil(f: { beat(): void }, condition: () => boolean, what: string): Promise<void> {
  return waitFor(() => {
    f.beat();
    return condition();
  }, what);
}

/** A node played by hand: a transport on `inbox` that records and acknowledges every message it reads. */
async function handPlayed(fabric: MemoryFabric, inbox: string): Promise<{ transport: MemoryTransport; wire: WireMessage[] }> {
  const transport = new MemoryTransport({ fabric });
  const wire: WireMessage[] = [];
  await transport.open([inbox], (entry) => {
    wire.push(entry.message);
    transport.ack(entry.inbox, [entry.entryId]);
  });
  return { transport, wire };
}

afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
});

describe('agents on an in-process fabric', () => {
  it('a producer on one node feeds a consumer on another, within demand, every event once and in order', async () => {
    const tag = `t${Math.random()}`;
    const yaml = `
stages:
  counter:
    module: ./stages.ts
    args: { limit: 500 }
    nodes: [a]
  recorder:
    module: ./stages.ts
    args: { tag: "${tag}" }
    nodes: [b]
    subscribe: [{ to: counter, maxDemand: 20 }]
`;
    const f = fakeFabric();
    const { fabric } = f;
    const a = await agent(f, 'a', yaml);
    await agent(f, 'b', yaml);
    await waitFor(() => (records.get(tag)?.flat().length ?? 0) >= 500, '500 events');
    expect(records.get(tag)?.flat()).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(Math.max(...(records.get(tag) ?? []).map((b) => b.length))).toBeLessThanOrEqual(10);
    const down = a.system.stats('counter').downstream;
    expect(down).toHaveLength(1);
    expect(down[0]?.sent).toBeLessThanOrEqual(down[0]?.asked ?? 0);
    // Every events entry is acknowledged once handled: the inbox drains.
    await waitFor(() => (fabric.inboxes.get('recorder@b')?.entries.size ?? 1) === 0, 'the consumer inbox to drain');
  });

  it('--demand-audit: both sides record what each subscription asked for and received, received never beyond asked', async () => {
    const tag = `t${Math.random()}`;
    const dir = await mkdtemp(join(tmpdir(), 'sf-audit-'));
    const yaml = `
stages:
  counter: { module: ./stages.ts, args: { limit: 400 }, nodes: [a] }
  recorder: { module: ./stages.ts, args: { tag: "${tag}" }, nodes: [b], subscribe: [{ to: counter, maxDemand: 20 }] }
`;
    const f = fakeFabric();
    await agent(f, 'a', yaml, join(dir, 'a.jsonl'));
    await agent(f, 'b', yaml, join(dir, 'b.jsonl'));
    await waitFor(() => (records.get(tag)?.flat().length ?? 0) >= 400, '400 events');
    const read = (file: string) =>
      readFileSync(join(dir, file), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { node: string; side: string; key: string; asked: number; received: number });
    // Each record is written at a beat when its counts changed: beat until one has seen all 400.
    await beatUntil(
      f,
      () => existsSync(join(dir, 'b.jsonl')) && read('b.jsonl').some((r) => r.received === 400),
      'the consumer side to record 400',
    );
    await beatUntil(
      f,
      () => existsSync(join(dir, 'a.jsonl')) && read('a.jsonl').some((r) => r.received === 400),
      'the producer side to record 400',
    );
    const consumerSide = read('b.jsonl');
    const producerSide = read('a.jsonl').filter((r) => r.key.startsWith('recorder@b<'));
    expect(new Set(consumerSide.map((r) => `${r.node} ${r.side} ${r.key}`))).toEqual(new Set(['b consumer recorder@b>counter@a']));
    expect(producerSide.length).toBeGreaterThan(0);
    for (const r of [...consumerSide, ...producerSide]) expect(r.received).toBeLessThanOrEqual(r.asked);
    // Counts only grow, and a line is written only when they changed.
    for (const side of [consumerSide, producerSide])
      for (let i = 1; i < side.length; i++) {
        const [before, now] = [side[i - 1], side[i]] as [(typeof side)[number], (typeof side)[number]];
        expect(now.asked + now.received).toBeGreaterThan(before.asked + before.received);
      }
    await rm(dir, { recursive: true, force: true });
  });

  it('a three-node pipeline: producer -> producer_consumer -> consumer', async () => {
    const tag = `t${Math.random()}`;
    const yaml = `
stages:
  counter: { module: ./stages.ts, args: { limit: 300 }, nodes: [a] }
  double: { module: ./stages.ts, nodes: [b], subscribe: [{ to: counter, maxDemand: 50 }] }
  recorder: { module: ./stages.ts, args: { tag: "${tag}" }, nodes: [c], subscribe: [{ to: double, maxDemand: 10 }] }
`;
    const f = fakeFabric();
    await agent(f, 'c', yaml);
    await agent(f, 'b', yaml);
    await agent(f, 'a', yaml);
    await waitFor(() => (records.get(tag)?.flat().length ?? 0) >= 300, '300 events');
    expect(records.get(tag)?.flat()).toEqual(Array.from({ length: 300 }, (_, i) => i * 2));
  });

  it('events for a consumer that has not subscribed again are held, within a bound; past it the oldest are dropped and reported', async () => {
    const { fabric, clock } = fakeFabric();
    const node = new FabricNode({
      node: 'n',
      transport: new MemoryTransport({ fabric }),
      system: new StageSystem({ clock }),
      maxOrphanEvents: 10,
    });
    const events: FabricEvent[] = [];
    node.on('event', (e) => events.push(e));
    await node.open(['c']);
    const sender = new MemoryTransport({ fabric });
    sender.send('c@n', { t: 'events', key: 'c@n>p@m', epoch: 1, seq: 0, events: [1, 2, 3, 4, 5, 6] });
    sender.send('c@n', { t: 'events', key: 'c@n>p@m', epoch: 1, seq: 6, events: [7, 8, 9, 10, 11, 12] });
    await waitFor(() => events.some((e) => e.type === 'orphans-dropped'), 'the drop report');
    expect(events.filter((e) => e.type === 'orphans-dropped')).toEqual([{ type: 'orphans-dropped', key: 'c@n>p@m', events: 6 }]);
    // The dropped entry is acknowledged; the kept one waits, unacknowledged, for the next subscription.
    expect(fabric.inboxes.get('c@n')?.entries.size).toBe(1);
    await node.close();
  });

  it('events sent on a subscription that ended before they were read (its node stalled or was cut off) go to the next one', async () => {
    const tag = `t${Math.random()}`;
    const yaml = `
stages:
  counter: { module: ./stages.ts, nodes: [a] }
  recorder: { module: ./stages.ts, args: { tag: "${tag}" }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`;
    const f = fakeFabric();
    const { fabric } = f;
    // The producer's node, played by hand: it beats, and reads what the consumer's node sends it.
    const { transport: producerSide, wire } = await handPlayed(fabric, 'counter@a');
    await producerSide.beat('a', 'first', 60_000);
    const consumerNode = await agent(f, 'b', yaml);
    const downs: FabricEvent[] = [];
    const ups: FabricEvent[] = [];
    consumerNode.fabric?.on('event', (e) => (e.type === 'node-down' ? downs : ups).push(e));
    const subscribes = () => wire.filter((m) => m.t === 'subscribe');
    await waitFor(() => wire.some((m) => m.t === 'ask'), 'the first subscription to ask');
    const first = subscribes()[0] as WireMessage;
    // A beat of the consumer's node: it has seen the producer's node alive.
    await beatUntil(f, () => ups.some((e) => e.type === 'node-up'), 'the consumer node to see the producer node');
    // The consumer's node counts the producer's node dead and subscribes again; only then does it read a batch
    // the producer sent on the first subscription (on the wire while the node was stalled).
    fabric.heartbeats.delete('a');
    await beatUntil(f, () => downs.length > 0, 'the producer node to count as dead');
    await producerSide.beat('a', 'first', 60_000);
    await waitFor(() => subscribes().length === 2, 'the consumer to subscribe again');
    producerSide.send('recorder@b', { t: 'events', key: first.key, epoch: first.epoch, seq: 0, events: [1, 2, 3, 4, 5] });
    await waitFor(() => (records.get(tag)?.flat().length ?? 0) === 5, 'the batch to reach the new subscription');
    expect(records.get(tag)?.flat()).toEqual([1, 2, 3, 4, 5]);
    // Handled, so acknowledged: nothing left in the consumer's inbox.
    await waitFor(() => (fabric.inboxes.get('recorder@b')?.entries.size ?? 1) === 0, 'the entry to be acknowledged');
    await producerSide.close();
  });

  it('a producer node cut off past its heartbeat cancels on the wire what it ends, even a subscription made while it was silent', async () => {
    const yaml = `
stages:
  counter: { module: ./stages.ts, args: { limit: 1000 }, nodes: [a] }
  recorder: { module: ./stages.ts, nodes: [b] }
`;
    const f = fakeFabric();
    const { fabric, clock } = f;
    const producerNode = await agent(f, 'a', yaml);
    const cutOff: FabricEvent[] = [];
    producerNode.fabric?.on('event', (e) => e.type === 'cut-off' && cutOff.push(e));
    // The consumer's node, played by hand: it beats, subscribes, asks, and reads what the producer's node sends it.
    const { transport: consumerSide, wire } = await handPlayed(fabric, 'recorder@b');
    await consumerSide.beat('b', 'b1', 60_000);
    const key = 'recorder@b>counter@a';
    const subscribe = (epoch: number) =>
      consumerSide.send('counter@a', { t: 'subscribe', key, epoch, consumer: 'recorder@b', incarnation: 'b1', options: { maxDemand: 10 } });
    const received = (epoch: number) =>
      wire.filter((m) => m.t === 'events' && m.epoch === epoch).reduce((n, m) => n + (m.t === 'events' ? m.events.length : 0), 0);
    subscribe(1);
    consumerSide.send('counter@a', { t: 'ask', key, epoch: 1, hwm: 10 });
    await waitFor(() => received(1) === 10, 'ten events on the first subscription');
    // The consumer's node counted the producer's node dead (it stalled) and subscribed again; the producer's node
    // reads that subscription as it resumes, before it notices it was silent past its heartbeat.
    subscribe(2);
    // The producer's node stalls (SIGSTOP, a long GC): 400 ms pass before it goes on with its beat.
    clock.advance(400);
    await beatUntil(f, () => cutOff.length > 0, 'the producer node to notice it was cut off');
    consumerSide.send('counter@a', { t: 'ask', key, epoch: 2, hwm: 5 });
    // The new subscription either serves its ask or is cancelled on the wire, so the consumer subscribes again: never silently forgotten.
    await waitFor(
      () => received(2) === 5 || wire.some((m) => m.t === 'cancel' && m.epoch === 2),
      'events or a cancel for the second subscription',
    );
    await consumerSide.close();
  });

  it('a node blocked longer than its heartbeat lives right after it opens (a stage that boots slowly) knows it was counted dead', async () => {
    const { fabric, clock } = fakeFabric();
    const node = new FabricNode({
      node: 'n',
      transport: new MemoryTransport({ fabric }),
      system: new StageSystem({ clock }),
      heartbeatMs: HEARTBEAT_MS,
    });
    const events: FabricEvent[] = [];
    node.on('event', (e) => events.push(e));
    await node.open([]);
    // A stage's init holds the event loop (a large synchronous load): 400 ms pass before the first beat goes out.
    clock.advance(400);
    const peer = new MemoryTransport({ fabric });
    expect((await peer.alive(['n'])).has('n')).toBe(false);
    await waitFor(() => events.some((e) => e.type === 'cut-off'), 'the node to notice it was cut off');
    await node.close();
  });
});

describe('a normal stop across nodes as in one process', () => {
  const finite = (tag: string, placed: boolean) => `
stages:
  counter: { module: ./stages.ts, args: { limit: 3000, stopAtLimit: true }, restart: transient${placed ? ', nodes: [a]' : ''} }
  slowPass:
    module: ./stages.ts
    args: { delayMs: 1 }
    restart: transient
    ${placed ? 'nodes: [b, c]' : 'replicas: 2'}
    subscribe: [{ to: counter, maxDemand: 100 }]
  recorder:
    module: ./stages.ts
    args: { tag: "${tag}" }
    restart: transient
    ${placed ? 'nodes: [a]' : ''}
    subscribe: [{ to: slowPass, maxDemand: 100 }]
`;

  it('a source that stops normally: every event it emitted reaches the sink through a replicated producer_consumer, on one node or three', async () => {
    const all = Array.from({ length: 3000 }, (_, i) => i);
    // One process.
    const oneTag = `t${Math.random()}`;
    const one = await Agent.start({ topology: parseTopology(finite(oneTag, false), FIXTURES), node: 'local', logger: silent });
    agents.push(one);
    expect(await one.done).toBe('normal');
    expect((records.get(oneTag) ?? []).flat().sort((x, y) => x - y)).toEqual(all);
    expect(exits.get(oneTag)).toBe('normal');
    // Three nodes: the source and the sink on a, a replica of the producer_consumer on b and on c.
    const tag = `t${Math.random()}`;
    const f = fakeFabric();
    const nodes = [await agent(f, 'b', finite(tag, true)), await agent(f, 'c', finite(tag, true)), await agent(f, 'a', finite(tag, true))];
    for (const n of nodes) expect(await n.done).toBe('normal');
    expect((records.get(tag) ?? []).flat().sort((x, y) => x - y)).toEqual(all);
    expect(exits.get(tag)).toBe('normal');
    // Every entry was acknowledged: nothing is left for a next run to read again.
    for (const inbox of ['slowPass@b', 'slowPass@c', 'recorder@a']) expect(f.fabric.inboxes.get(inbox)?.entries.size).toBe(0);
  });

  it("a producer's cancel waits behind the events it sent before it that the consumer has not asked for yet", async () => {
    const tag = `t${Math.random()}`;
    const yaml = `
stages:
  counter: { module: ./stages.ts, nodes: [a] }
  recorder: { module: ./stages.ts, args: { tag: "${tag}" }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10, minDemand: 5, cancel: transient }] }
`;
    const f = fakeFabric();
    const { fabric } = f;
    // The producer's node, played by hand.
    const { transport: producerSide, wire } = await handPlayed(fabric, 'counter@a');
    await producerSide.beat('a', 'first', 60_000);
    const consumerNode = await agent(f, 'b', yaml);
    const seen: FabricEvent[] = [];
    consumerNode.fabric?.on('event', (e) => seen.push(e));
    const subscribes = () => wire.filter((m) => m.t === 'subscribe');
    await waitFor(() => wire.some((m) => m.t === 'ask'), 'the first subscription to ask');
    const first = subscribes()[0] as WireMessage;
    // The consumer's node counts the producer's node dead and subscribes again.
    await beatUntil(f, () => seen.some((e) => e.type === 'node-up'), 'the consumer node to see the producer node');
    fabric.heartbeats.delete('a');
    await beatUntil(f, () => seen.some((e) => e.type === 'node-down'), 'the producer node to count as dead');
    await producerSide.beat('a', 'first', 60_000);
    await waitFor(() => subscribes().length === 2 && wire.some((m) => m.t === 'ask' && m.epoch !== first.epoch), 'a second subscription');
    const second = subscribes()[1] as WireMessage;
    // A batch sent on the first subscription arrives late and takes half of the new subscription's demand;
    // the producer then sends what the new one asked for, and exits.
    producerSide.send('recorder@b', { t: 'events', key: first.key, epoch: first.epoch, seq: 0, events: [1, 2, 3, 4, 5] });
    producerSide.send('recorder@b', {
      t: 'events',
      key: second.key,
      epoch: second.epoch,
      seq: 0,
      events: [6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    });
    producerSide.send('recorder@b', {
      t: 'cancel',
      key: second.key,
      epoch: second.epoch,
      from: 'producer',
      kind: 'down',
      reason: 'normal',
    });
    // The five it had not asked for are handed on as it asks again; the cancel comes after them.
    await waitFor(() => (records.get(tag)?.flat().length ?? 0) === 15, 'all 15 events at the consumer');
    expect(records.get(tag)?.flat()).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    await waitFor(() => (fabric.inboxes.get('recorder@b')?.entries.size ?? 1) === 0, 'every entry to be acknowledged');
    await producerSide.close();
  });

  it('events a consumer handles after its producer cancelled (they were in its mailbox) are acknowledged, not kept for a next run', async () => {
    const tag = `t${Math.random()}`;
    const yaml = `
stages:
  counter: { module: ./stages.ts, nodes: [a] }
  recorder:
    module: ./stages.ts
    args: { tag: "${tag}", delayMs: 5 }
    nodes: [b]
    subscribe: [{ to: counter, maxDemand: 10, minDemand: 5, cancel: transient }]
`;
    const f = fakeFabric();
    const { transport: producerSide, wire } = await handPlayed(f.fabric, 'counter@a');
    await producerSide.beat('a', 'first', 60_000);
    await agent(f, 'b', yaml);
    await waitFor(() => wire.some((m) => m.t === 'ask'), 'the subscription to ask');
    const sub = wire.find((m) => m.t === 'subscribe') as WireMessage;
    producerSide.send('recorder@b', { t: 'events', key: sub.key, epoch: sub.epoch, seq: 0, events: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] });
    producerSide.send('recorder@b', { t: 'cancel', key: sub.key, epoch: sub.epoch, from: 'producer', kind: 'down', reason: 'normal' });
    await waitFor(() => (records.get(tag)?.flat().length ?? 0) === 10, 'the ten events handled');
    await waitFor(() => (f.fabric.inboxes.get('recorder@b')?.entries.size ?? 1) === 0, 'the entry to be acknowledged');
    await producerSide.close();
  });
});

describe('a consumer whose work outlives handleEvents, on another node', () => {
  it('a concurrentConsumer acknowledges an inbox entry only once every task it carried has finished', async () => {
    const yaml = `
stages:
  counter: { module: ./stages.ts, args: { limit: 4 }, nodes: [a] }
  gatedWorker: { module: ./stages.ts, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`;
    const f = fakeFabric();
    const inbox = () => f.fabric.inboxes.get('gatedWorker@b')?.entries.size ?? 0;
    await agent(f, 'a', yaml);
    const worker = await agent(f, 'b', yaml);
    await waitFor(() => [0, 1, 2, 3].every((e) => gates.has(e)), 'four tasks running');
    await worker.system.idle();
    expect(inbox()).toBeGreaterThan(0);
    // Tasks finish out of order; the one that started first still runs, so its entry stays.
    for (const e of [3, 2, 1]) gates.get(e)?.();
    await worker.system.idle();
    expect(inbox()).toBeGreaterThan(0);
    gates.get(0)?.();
    await waitFor(() => inbox() === 0, 'the entry to be acknowledged once every task finished');
  });
});
