// The placement matrix (invariant 5: placement never changes outcomes). Every event topology of the
// examples and of the fabric fixtures runs all on one node (one agent process, no Redis) and split over
// agent processes (producer and consumers on different nodes), and both runs must give the same verified
// result. The kill -9 cases run a durable (re-sending) source, so the result is every event taking effect
// exactly once whatever process dies.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { AgentProcess, killAll, ROOT, readRecords, STAGES, testFabric, waitFor } from './agent-process.js';

const redisUrl = inject('redisUrl');
const FAST_BEATS = { STAGEFABRIC_HEARTBEAT_MS: '200' };

afterEach(async () => {
  await killAll();
});

type Fabric = Awaited<ReturnType<typeof testFabric>>;

/** Runs a topology file in one agent process, with no Redis: every stage in one process. */
async function onOneNode(topology: string, env: Record<string, string> = {}): Promise<AgentProcess[]> {
  const agent = new AgentProcess(topology, 'local', { REDIS_URL: '', LOG_LEVEL: 'info', ...env });
  await finished([agent]);
  return [agent];
}

/**
 * Writes the topology with each stage placed on the given nodes (module paths made absolute) and runs
 * one agent process per node: those hosting consumers first, then (once they are up and subscribed)
 * the nodes in `last`, the source's.
 */
async function split(
  f: Fabric,
  source: string,
  placement: Record<string, readonly string[]>,
  last: readonly string[],
  env: Record<string, string> = {},
): Promise<AgentProcess[]> {
  const topology = placed(source, placement);
  const file = await f.topology(topology);
  const nodes = [...new Set(Object.values(placement).flat())];
  const first = nodes.filter((n) => !last.includes(n)).map((n) => f.agent(file, n, env));
  await waitFor(() => first.every((a) => a.logs('agent started').length > 0), 'the consumer nodes to start');
  const agents = [...first, ...last.map((n) => f.agent(file, n, env))];
  await finished(agents);
  return agents;
}

/** A topology file's text with stages placed on nodes, and module paths resolved against the file's folder. */
function placed(source: string, placement: Record<string, readonly string[]>): string {
  const doc = parse(readFileSync(source, 'utf8')) as { stages: Record<string, { module: string; nodes?: string[] }> };
  const dir = join(source, '..');
  for (const [name, stage] of Object.entries(doc.stages)) {
    if (stage.module.startsWith('.')) stage.module = join(dir, stage.module);
    const nodes = placement[name];
    if (nodes !== undefined) stage.nodes = [...nodes];
  }
  return stringify(doc);
}

/** Every agent exits by itself, with 0, once its stages have finished. */
async function finished(agents: readonly AgentProcess[]): Promise<void> {
  await waitFor(() => agents.every((a) => a.child.exitCode !== null), 'every agent to finish by itself', 30_000);
  for (const a of agents) expect({ exit: a.child.exitCode, stderr: a.stderr.slice(-2000) }).toMatchObject({ exit: 0 });
}

const range = (n: number, step = 1) => Array.from({ length: n }, (_, i) => i * step);
const sorted = (xs: readonly number[]) => [...xs].sort((a, b) => a - b);

/** What the counter's printers printed: per printer (agent process and label), the events it got in order. */
function printed(agents: readonly AgentProcess[]): Map<string, number[]> {
  const got = new Map<string, number[]>();
  for (const [i, a] of agents.entries()) {
    for (const line of a.stdout.split('\n')) {
      const m = /^(\S+) got (\d+) \(its event #\d+\)$/.exec(line);
      if (m === null) continue;
      const key = `${i}:${m[1]}`;
      got.set(key, [...(got.get(key) ?? []), Number(m[2])]);
    }
  }
  return got;
}

/** The chocolates the boxer boxed, by id, and its closing line. */
function boxed(agents: readonly AgentProcess[]): { ids: number[]; done: string[] } {
  const out = agents.map((a) => a.stdout).join('\n');
  const ids = [...out.matchAll(/^boxer boxed \d+ .*\[([^\]]*)\]$/gm)].flatMap((m) =>
    (m[1] ?? '').split(' ').map((id) => Number(id.slice(1))),
  );
  return { ids, done: [...out.matchAll(/^done: (\d+) chocolates boxed/gm)].map((m) => m[1] as string) };
}

describe('placement matrix: the examples on one node and over agent processes', () => {
  const counter = join(ROOT, 'examples/counter/topology.yaml');
  const broadcast = join(ROOT, 'examples/counter/broadcast.yaml');
  const chocolates = join(ROOT, 'examples/chocolates/topology.yaml');
  const twoHosts = join(ROOT, 'examples/chocolates/two-hosts.yaml');

  it('counter: each of the 40 events reaches exactly one printer', async () => {
    const f = await testFabric(redisUrl);
    const verify = (agents: readonly AgentProcess[]) => sorted([...printed(agents).values()].flat());
    const one = verify(await onOneNode(counter));
    const spread = verify(await split(f, counter, { counter: ['a'], printer: ['b', 'c'] }, ['a']));
    expect(one).toEqual(range(40));
    expect(spread).toEqual(one);
  });

  it('broadcast: every printer gets all 10 events, in order', async () => {
    const f = await testFabric(redisUrl);
    const verify = (agents: readonly AgentProcess[]) => {
      const got = printed(agents);
      return { printers: got.size, each: new Set([...got.values()].map((events) => events.join(','))) };
    };
    const one = verify(await onOneNode(broadcast));
    const spread = verify(await split(f, broadcast, { counter: ['a'], printer: ['b', 'c'] }, ['a']));
    expect(one).toEqual({ printers: 3, each: new Set([range(10).join(',')]) });
    // Placed on b and on c, the printer runs its 3 replicas on each node.
    expect(spread).toEqual({ printers: 6, each: one.each });
  });

  it('chocolates: each of the 60 chocolates is boxed once, maker, wrapper and boxer on three nodes', async () => {
    const f = await testFabric(redisUrl);
    const one = boxed(await onOneNode(chocolates));
    const spread = boxed(await split(f, chocolates, { maker: ['a'], wrapper: ['b'], boxer: ['c'] }, ['a']));
    expect(sorted(one.ids)).toEqual(range(60));
    expect(one.done).toEqual(['60']);
    expect(sorted(spread.ids)).toEqual(sorted(one.ids));
    expect(spread.done).toEqual(one.done);
  });

  it('chocolates over two hosts as its file places them (kitchen, packing) and on one node', async () => {
    const f = await testFabric(redisUrl);
    const one = boxed(await onOneNode(twoHosts));
    const agents = [f.agent(twoHosts, 'packing')];
    await waitFor(() => agents.every((a) => a.logs('agent started').length > 0), 'the packing room to start');
    agents.push(f.agent(twoHosts, 'kitchen'));
    await finished(agents);
    const spread = boxed(agents);
    expect(sorted(one.ids)).toEqual(range(60));
    expect(sorted(spread.ids)).toEqual(sorted(one.ids));
    expect(spread.done).toEqual(['60']);
  });
});

describe('placement matrix: fixture pipelines on one node and over three agent processes', () => {
  it('producer -> producer_consumer -> consumer, the source stopping normally: every event once, in order', async () => {
    const f = await testFabric(redisUrl);
    const topology = (out: string) => `
stages:
  counter: { module: ${STAGES}, args: { limit: 5000, stopAtLimit: true }, restart: transient }
  double: { module: ${STAGES}, restart: transient, subscribe: [{ to: counter, maxDemand: 200 }] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, restart: transient, subscribe: [{ to: double, maxDemand: 100 }] }
`;
    const oneOut = f.file('one.jsonl');
    await onOneNode(await f.topology(topology(oneOut)));
    const splitOut = f.file('split.jsonl');
    const source = await f.topology(topology(splitOut));
    await split(f, source, { counter: ['a'], double: ['b'], recorder: ['c'] }, ['a']);
    const events = (file: string) => readRecords(file).flatMap((r) => r.events ?? []);
    expect(events(oneOut)).toEqual(range(5000, 2));
    expect(events(splitOut)).toEqual(events(oneOut));
  });

  it('a producer_consumer replicated on two nodes between a source that stops normally and its sink: every event reaches the sink', async () => {
    // The pipeline: the source and the sink on a, the producer_consumer on b and c (two replicas in one process).
    const f = await testFabric(redisUrl);
    const topology = (out: string, placedOn: boolean) => `
stages:
  counter: { module: ${STAGES}, args: { limit: 30000, stopAtLimit: true }, restart: transient }
  relay: { module: ${STAGES}, restart: transient, ${placedOn ? '' : 'replicas: 2, '}subscribe: [{ to: counter, maxDemand: 1000 }] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, restart: transient, subscribe: [{ to: relay, maxDemand: 1000 }] }
`;
    const oneOut = f.file('one.jsonl');
    await onOneNode(await f.topology(topology(oneOut, false)));
    const splitOut = f.file('split.jsonl');
    await split(f, await f.topology(topology(splitOut, true)), { counter: ['a'], relay: ['b', 'c'], recorder: ['a'] }, ['a']);
    const events = (file: string) => sorted(readRecords(file).flatMap((r) => r.events ?? []));
    expect(events(oneOut)).toEqual(range(30000));
    expect(events(splitOut)).toEqual(events(oneOut));
  });
});

describe('placement matrix: kill -9 with a durable source, on one node and over three', () => {
  const N = 3000;
  /** resender -> relay -> onceSink; the sink handles slowly enough that a kill lands mid-stream. */
  const topology = (out: string) => `
stages:
  resender: { module: ${STAGES}, args: { limit: ${N}, handled: ${out}, redeliverMs: 2000 } }
  relay: { module: ${STAGES}, subscribe: [{ to: resender, maxDemand: 50 }] }
  onceSink: { module: ${STAGES}, args: { file: ${out}, delayMs: 5 }, subscribe: [{ to: relay, maxDemand: 50 }] }
`;
  const PLACED = { resender: ['a'], relay: ['b'], onceSink: ['c'] };
  const fresh = (out: string) => readRecords(out).flatMap((r) => (r as { fresh?: number[] }).fresh ?? []);
  const delivered = (out: string) => readRecords(out).flatMap((r) => r.events ?? []);

  /** Every event took effect exactly once; deliveries may repeat (at least once), each counted. */
  async function everyEventOnce(out: string): Promise<void> {
    await waitFor(() => new Set(fresh(out)).size === N, `all ${N} events to take effect`, 60_000);
    expect(sorted(fresh(out))).toEqual(range(N));
    expect(new Set(delivered(out)).size).toBe(N);
  }

  it('on one node: the agent killed mid-stream and started again', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('one.jsonl');
    const file = await f.topology(topology(out));
    const first = new AgentProcess(file, 'local', { REDIS_URL: '', LOG_LEVEL: 'info' });
    await waitFor(() => new Set(fresh(out)).size >= N / 3, 'a third of the events');
    await first.kill('SIGKILL');
    new AgentProcess(file, 'local', { REDIS_URL: '', LOG_LEVEL: 'info' });
    await everyEventOnce(out);
  });

  it("over three nodes: the producer's node killed mid-stream and started again", async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const file = await f.topology(placed(await f.topology(topology(out)), PLACED));
    f.agent(file, 'c', FAST_BEATS);
    f.agent(file, 'b', FAST_BEATS);
    const producer = f.agent(file, 'a', FAST_BEATS);
    await waitFor(() => new Set(fresh(out)).size >= N / 3, 'a third of the events');
    await producer.kill('SIGKILL');
    f.agent(file, 'a', FAST_BEATS);
    await everyEventOnce(out);
  });

  it("over three nodes: a consumer's node killed mid-stream and started again, the producer_consumer's and then the sink's", async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const file = await f.topology(placed(await f.topology(topology(out)), PLACED));
    const sink = f.agent(file, 'c', FAST_BEATS);
    const relay = f.agent(file, 'b', FAST_BEATS);
    f.agent(file, 'a', FAST_BEATS);
    await waitFor(() => new Set(fresh(out)).size >= N / 4, 'a quarter of the events');
    await relay.kill('SIGKILL');
    f.agent(file, 'b', FAST_BEATS);
    await waitFor(() => new Set(fresh(out)).size >= N / 2, 'half of the events');
    await sink.kill('SIGKILL');
    f.agent(file, 'c', FAST_BEATS);
    await everyEventOnce(out);
  });
});
