import { Redis } from 'ioredis';
import { Packr } from 'msgpackr';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { startLocalRedis } from '../support/servers.js';
import { handled, killAll, readRecords, STAGES, testFabric, waitFor } from './agent-process.js';

const redisUrl = inject('redisUrl');
const redis = new Redis(redisUrl);
const FAST_BEATS = { STAGEFABRIC_HEARTBEAT_MS: '200' };

afterEach(async () => {
  await killAll();
});
afterAll(async () => {
  await redis.quit();
});

describe('fabric faults', () => {
  it('kill -9 a consumer agent mid-stream and start it again: it resubscribes, loses nothing unacknowledged, handles nothing twice', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 2000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 3 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 50 }] }
`);
    f.agent(topology, 'a', FAST_BEATS);
    const first = f.agent(topology, 'b', FAST_BEATS);
    await waitFor(() => handled(out).length >= 300, '300 events handled');
    await first.kill('SIGKILL');
    const second = f.agent(topology, 'b', FAST_BEATS);
    const secondPid = second.child.pid;
    await waitFor(() => new Set(handled(out)).size === 2000, 'every event handled by one incarnation or the other', 30_000);
    const records = readRecords(out);
    const byNew = records.filter((r) => r.pid === secondPid).flatMap((r) => r.events ?? []);
    expect(new Set(byNew).size).toBe(byNew.length);
    expect([...new Set(handled(out))].sort((x, y) => x - y)).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    // At-least-once: what the killed agent handled but had not acknowledged may come again, never more than one batch in flight.
    expect(handled(out).length - 2000).toBeLessThanOrEqual(50);
  });

  it("kill -9 a node running a concurrentConsumer's tasks for a producer on another node: every task unfinished at the kill runs again on the node's next run", async () => {
    const f = await testFabric(redisUrl);
    const work = f.file('work.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100 }, nodes: [a] }
  worker: { module: ${STAGES}, args: { file: ${work}, taskMs: 300 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const env = FAST_BEATS;
    const tasks = () => readRecords(work) as unknown as { pid: number; start?: number; done?: number }[];
    const by = (pid: number | undefined, what: 'start' | 'done') =>
      new Set(tasks().flatMap((t) => (t.pid === pid && t[what] !== undefined ? [t[what]] : [])));
    f.agent(topology, 'a', env);
    const first = f.agent(topology, 'b', env);
    const unfinished = () => [...by(first.child.pid, 'start')].filter((e) => !by(first.child.pid, 'done').has(e));
    await waitFor(() => by(first.child.pid, 'done').size >= 30 && unfinished().length > 0, '30 tasks done and more running');
    await first.kill('SIGKILL');
    // Tasks were running when the node died: the entries of their events were not acknowledged.
    const left = unfinished();
    expect(left.length).toBeGreaterThan(0);
    const second = f.agent(topology, 'b', env);
    const done = () => new Set(tasks().flatMap((t) => (t.done === undefined ? [] : [t.done])));
    await waitFor(() => done().size === 100, 'every task done by one run or the other', 30_000);
    expect([...done()].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    // At least once: each task the killed run left unfinished ran again, to its end, on the next run.
    const again = by(second.child.pid, 'done');
    expect(left.filter((e) => !again.has(e))).toEqual([]);
  });

  it('kill -9 the producer agent: consumers see noconnection and follow their cancel mode', async () => {
    const f = await testFabric(redisUrl);
    const keep = f.file('temporary.jsonl');
    const follow = f.file('permanent.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 1000000 }, nodes: [a] }
  stays: { module: ${STAGES}, export: recorder, args: { file: ${keep}, delayMs: 10 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 5, cancel: temporary }] }
  follows: { module: ${STAGES}, export: recorder, args: { file: ${follow}, delayMs: 10 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 5 }] }
`);
    const producer = f.agent(topology, 'a', FAST_BEATS);
    const consumers = f.agent(topology, 'b', FAST_BEATS);
    await waitFor(() => handled(keep).length > 20 && handled(follow).length > 20, 'both consumers to get events');
    await producer.kill('SIGKILL');
    await waitFor(
      () => readRecords(keep).some((r) => r.cancel) && readRecords(follow).some((r) => r.cancel),
      'both consumers to see the cancel',
    );
    expect(readRecords(keep).find((r) => r.cancel)?.cancel).toEqual({ kind: 'down', reason: 'noconnection' });
    expect(readRecords(follow).find((r) => r.cancel)?.cancel).toEqual({ kind: 'down', reason: 'noconnection' });
    // permanent: the consumer exited with the reason and its supervisor started it again (a second `started`).
    await waitFor(() => readRecords(follow).filter((r) => r.started).length === 2, 'the permanent consumer to restart');
    await waitFor(() => consumers.logs('stage crashed').length > 0, 'the crash to be logged');
    expect(consumers.logs('stage crashed').map((l) => l.stage)).toEqual(['follows']);
    // temporary: it stayed up.
    expect(readRecords(keep).filter((r) => r.started)).toHaveLength(1);
    // The producer comes back: the restarted consumer, subscribed meanwhile, gets events again.
    const before = handled(follow).length;
    f.agent(topology, 'a', FAST_BEATS);
    await waitFor(() => handled(follow).length > before + 20, 'events again after the producer came back');
  });

  it('restart Redis under load: agents reconnect and finish the stream, every event once and in order', async () => {
    // A Redis of this test's own, with an append-only file, so a restart keeps what it held.
    const own = await startLocalRedis(['--appendonly', 'yes', '--appendfsync', 'always']);
    try {
      const f = await testFabric(own.url);
      const out = f.file('out.jsonl');
      const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 3000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 20 }] }
`);
      const agents = [f.agent(topology, 'a'), f.agent(topology, 'b')];
      await waitFor(() => handled(out).length >= 500, '500 events before the restart');
      await own.restart();
      await waitFor(() => handled(out).length >= 3000, 'the stream to finish after the restart', 40_000);
      expect(handled(out)).toEqual(Array.from({ length: 3000 }, (_, i) => i));
      for (const a of agents) expect(a.child.exitCode).toBeNull();
    } finally {
      await killAll();
      await own.stop();
    }
  });

  it('a consumer host stalled past the heartbeat timeout (SIGSTOP) resubscribes once it runs again, and the stream finishes', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 2000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 5 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 20 }] }
`);
    const producer = f.agent(topology, 'a', { STAGEFABRIC_HEARTBEAT_MS: '200' });
    const consumer = f.agent(topology, 'b', { STAGEFABRIC_HEARTBEAT_MS: '200' });
    await waitFor(() => handled(out).length >= 200, 'the stream to start');
    const downs = () => producer.logs('node down: its subscriptions are cancelled with noconnection').length;
    const downsBefore = downs();
    consumer.child.kill('SIGSTOP');
    // The producer's node counts the consumer's node dead and ends the subscription on its side.
    await waitFor(() => downs() > downsBefore, 'the consumer node to count as dead');
    consumer.child.kill('SIGCONT');
    // Every event, including those on the wire to the ended subscription while the consumer was stopped.
    await waitFor(() => new Set(handled(out)).size === 2000, 'the stream to finish after the stall', 30_000);
    // At least once: a batch handled just as the subscription ended may come again, never more than one demand's worth.
    expect(handled(out).length - 2000).toBeLessThanOrEqual(20);
    expect(consumer.child.exitCode).toBeNull();
  });

  it('garbage on an inbox (wrong types, truncated msgpack, a huge batch, no payload) is dead-lettered and logged; the agent keeps going', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 400 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 5 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const consumer = f.agent(topology, 'b');
    f.agent(topology, 'a');
    await waitFor(() => handled(out).length >= 50, 'the stream to start');
    const inbox = `sf:${f.namespace}:inbox:recorder@b`;
    const packr = new Packr({ useRecords: false });
    const good = packr.pack({ t: 'events', key: 'recorder@b>counter@a', epoch: 1, seq: 0, events: [1, 2, 3] });
    await redis.xadd(inbox, '*', 'm', packr.pack({ t: 'events', key: 42, epoch: 'one', events: 'no' }));
    await redis.xadd(inbox, '*', 'm', good.subarray(0, good.length - 4));
    await redis.xadd(
      inbox,
      '*',
      'm',
      packr.pack({ t: 'events', key: 'recorder@b>counter@a', epoch: 1, seq: 0, events: new Array(100_001).fill(0) }),
    );
    await redis.xadd(inbox, '*', 'other', 'field');
    await waitFor(() => consumer.logs('inbox entry moved to the dead-letter stream').length === 4, 'four dead letters logged');
    const letters = consumer.logs('inbox entry moved to the dead-letter stream');
    expect(letters.map((l) => l.kind)).toEqual(['malformed', 'malformed', 'malformed', 'malformed']);
    const reasons = letters.map((l) => String(l.reason));
    expect(reasons[0]).toMatch(/key must be a subscription key/);
    expect(reasons[1]).toMatch(/undecodable msgpack|malformed/);
    expect(reasons[2]).toMatch(/a batch of 100001 events exceeds the limit of 100000/);
    expect(reasons[3]).toBe('entry has no field "m"');
    expect(await redis.xlen(`sf:${f.namespace}:dead`)).toBe(4);
    await waitFor(() => handled(out).length >= 400, 'the stream to finish despite the garbage');
    expect(handled(out)).toEqual(Array.from({ length: 400 }, (_, i) => i));
    expect(consumer.child.exitCode).toBeNull();
  });
});
