import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { handled, killAll, readRecords, STAGES, testFabric, waitFor } from './agent-process.js';

const redisUrl = inject('redisUrl');
const redis = new Redis(redisUrl);

afterEach(async () => {
  // An agent left running by a failed test would disturb the next one.
  await killAll();
});
afterAll(async () => {
  await redis.quit();
});

describe('fabric over Redis: agents as separate processes', () => {
  it('producer -> producer_consumer -> consumer over three agents: every event once, in order', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 3000 }, nodes: [a] }
  double: { module: ${STAGES}, nodes: [b], subscribe: [{ to: counter, maxDemand: 200 }] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, nodes: [c], subscribe: [{ to: double, maxDemand: 100 }] }
`);
    const agents = [f.agent(topology, 'c'), f.agent(topology, 'b'), f.agent(topology, 'a')];
    await waitFor(() => handled(out).length >= 3000, '3000 events at the consumer');
    expect(handled(out)).toEqual(Array.from({ length: 3000 }, (_, i) => i * 2));
    // Handled entries are acknowledged and deleted: the consumer's inbox drains to nothing.
    await waitFor(async () => (await redis.xlen(`sf:${f.namespace}:inbox:recorder@c`)) === 0, 'the consumer inbox to drain');
    for (const a of agents) expect(a.logs('received events beyond demand; held, not handed on')).toEqual([]);
    await Promise.all(agents.map((a) => a.kill('SIGTERM')));
    for (const a of agents) expect(await a.exited).toBe(0);
  });

  it('a slow remote consumer holds back a fast producer: the inbox never exceeds maxDemand, the buffer keeps its rule', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const log = f.file('demand.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100000, log: ${log} }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 20 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10, minDemand: 5 }] }
`);
    const producerAgent = f.agent(topology, 'a');
    f.agent(topology, 'b');
    let maxInboxEvents = 0;
    const inbox = `sf:${f.namespace}:inbox:recorder@b`;
    await waitFor(async () => {
      // Count the events in the consumer's inbox, pending ones included.
      const entries = (await redis.xrange(inbox, '-', '+')) as [string, string[]][];
      maxInboxEvents = Math.max(maxInboxEvents, entries.length);
      return handled(out).length >= 200;
    }, '200 events handled by the slow consumer');
    expect(maxInboxEvents).toBeLessThanOrEqual(10);
    // The producer was only ever asked for what the consumer asked for.
    const demands = readRecords(log) as unknown as { demand: number }[];
    expect(demands[0]?.demand).toBe(10);
    expect(demands.every((d) => d.demand <= 10)).toBe(true);
    expect(handled(out)).toEqual(Array.from({ length: handled(out).length }, (_, i) => i));
    expect(producerAgent.logs('received events beyond demand; held, not handed on')).toEqual([]);
  });

  it('a producer emitting regardless of demand fills its buffer; overflow follows bufferKeep and is reported', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    // 50 events every 10 ms against a consumer taking 10 every 20 ms: the buffer of 100 overflows, keeping the newest.
    const topology = await f.topology(`
stages:
  ticker: { module: ${STAGES}, args: { burst: 50, everyMs: 10, bufferSize: 100, bufferKeep: last }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 20 }, nodes: [b], subscribe: [{ to: ticker, maxDemand: 10, minDemand: 5 }] }
`);
    const producerAgent = f.agent(topology, 'a');
    f.agent(topology, 'b');
    await waitFor(
      () => producerAgent.logs('producer buffer overflow: events dropped').length > 0 && handled(out).length >= 50,
      'overflow and 50 events handled',
    );
    expect(producerAgent.logs('producer buffer overflow: events dropped')[0]).toMatchObject({
      stage: 'ticker',
      bufferSize: 100,
      keep: 'last',
    });
    // keep last: once the oldest were dropped, the consumer jumps ahead to newer events.
    const events = handled(out);
    expect(events.some((e, i) => i > 0 && e > (events[i - 1] as number) + 1)).toBe(true);
    expect([...events].sort((a, b) => a - b)).toEqual(events);
  });

  it('work follows demand: a consumer host 5x slower gets about a sixth of the events', async () => {
    const f = await testFabric(redisUrl);
    const fast = f.file('fast.jsonl');
    const slow = f.file('slow.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 1000000 }, nodes: [a] }
  fast: { module: ${STAGES}, export: recorder, args: { file: ${fast}, delayMs: 10 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 2, minDemand: 1 }] }
  slow: { module: ${STAGES}, export: recorder, args: { file: ${slow}, delayMs: 50 }, nodes: [c], subscribe: [{ to: counter, maxDemand: 2, minDemand: 1 }] }
`);
    f.agent(topology, 'a');
    f.agent(topology, 'b');
    f.agent(topology, 'c');
    await waitFor(() => handled(fast).length + handled(slow).length >= 360, '360 events handled in all', 60_000);
    const share = handled(slow).length / (handled(fast).length + handled(slow).length);
    // Ideal 1/6 ≈ 0.17; allow for scheduling noise on a busy machine.
    expect(share).toBeGreaterThan(0.08);
    expect(share).toBeLessThan(0.28);
  });

  it('broadcast: every consumer host gets every event; partition: each host gets its own partition', async () => {
    const f = await testFabric(redisUrl);
    const files = { b1: f.file('b1.jsonl'), b2: f.file('b2.jsonl'), even: f.file('even.jsonl'), odd: f.file('odd.jsonl') };
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 200, dispatcher: { type: broadcast } }, nodes: [a] }
  b1: { module: ${STAGES}, export: recorder, args: { file: ${files.b1} }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
  b2: { module: ${STAGES}, export: recorder, args: { file: ${files.b2}, delayMs: 5 }, nodes: [c], subscribe: [{ to: counter, maxDemand: 10 }] }
  parity: { module: ${STAGES}, args: { limit: 200 }, nodes: [a] }
  even: { module: ${STAGES}, export: recorder, args: { file: ${files.even} }, nodes: [b], subscribe: [{ to: parity, partition: even, maxDemand: 10 }] }
  odd: { module: ${STAGES}, export: recorder, args: { file: ${files.odd} }, nodes: [c], subscribe: [{ to: parity, partition: odd, maxDemand: 10 }] }
`);
    // A broadcast subscriber sees events from when it subscribed: let both consumers subscribe before the producer starts.
    const consumers = [f.agent(topology, 'b'), f.agent(topology, 'c')];
    await waitFor(() => consumers.every((a) => a.logs('agent started').length === 1), 'the consumer agents to start');
    f.agent(topology, 'a');
    const all = Array.from({ length: 200 }, (_, i) => i);
    await waitFor(() => handled(files.b1).length === 200 && handled(files.b2).length === 200, 'both broadcast consumers to get all 200');
    expect(handled(files.b1)).toEqual(all);
    expect(handled(files.b2)).toEqual(all);
    await waitFor(() => handled(files.even).length === 100 && handled(files.odd).length === 100, 'both partitions to get their 100');
    expect(handled(files.even)).toEqual(all.filter((x) => x % 2 === 0));
    expect(handled(files.odd)).toEqual(all.filter((x) => x % 2 === 1));
  });
});
