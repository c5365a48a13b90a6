import { resolve } from 'node:path';
import { MemoryFabric, MemoryTransport } from '@stagefabric/fabric';
import type { TaskRecord, TaskStore } from '@stagefabric/tasks';
import { PGliteTaskStore } from '@stagefabric/tasks/pglite';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { Agent, parseTopology } from '../src/index.js';
import { gate, runs } from './fixtures/task-runs.js';

const FIXTURES = resolve(import.meta.dirname, 'fixtures/topology.yaml');
const silent = pino({ level: process.env.DEBUG_LOG ? 'info' : 'silent' });
const agents: Agent[] = [];
const stores: TaskStore[] = [];

afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
  for (const s of stores.splice(0)) await s.close();
  runs.length = 0;
});

// The producer on node a, runners on b and c; in one process, all three on the one node.
const TOPOLOGY = `
tasks: { handlers: ./task-handlers.ts }
stages:
  tasks: { module: stagefabric:task-producer, args: { pollIntervalMs: 50, leaseMs: 5000 }, nodes: [a] }
  runner:
    module: stagefabric:task-runner
    args: { leaseMs: 5000, concurrency: 4 }
    nodes: [b, c]
    subscribe: [{ to: tasks, maxDemand: 8 }]
`;

async function start(store: TaskStore, node: string, fabric?: MemoryFabric, logger = silent.child({ node })): Promise<Agent> {
  const agent = await Agent.start({
    topology: parseTopology(TOPOLOGY, FIXTURES),
    node,
    logger,
    taskStore: store,
    ...(fabric === undefined ? {} : { transport: new MemoryTransport({ fabric }), heartbeatMs: 200 }),
  });
  agents.push(agent);
  return agent;
}

/** Tasks that succeed, fail (two attempts) and time out (one attempt), enqueued; what each must end as. */
async function workload(store: TaskStore) {
  const ok = await store.enqueue(Array.from({ length: 60 }, () => ({ name: 'succeed' })));
  const bad = await store.enqueue(Array.from({ length: 5 }, () => ({ name: 'fail', options: { maxAttempts: 2 } })));
  const slow = await store.enqueue(Array.from({ length: 5 }, () => ({ name: 'hang', options: { maxAttempts: 1, timeoutMs: 100 } })));
  return { ok: ok.map((r) => r.id), bad: bad.map((r) => r.id), slow: slow.map((r) => r.id) };
}

/** Every task final and in the state its handler earned; each success run once, each failure as often as its attempts. */
async function verify(store: TaskStore, ids: Awaited<ReturnType<typeof workload>>) {
  const mine = new Set([...ids.ok, ...ids.bad, ...ids.slow]);
  let all: TaskRecord[] = [];
  await waitFor(async () => {
    all = (await store.list({ limit: 1000 })).filter((t) => mine.has(t.id));
    return all.length === 70 && all.every((t) => t.state !== 'waiting' && t.state !== 'running');
  }, 'every task to be final');
  const byId = new Map(all.map((t) => [t.id, t]));
  const runsOf = (id: string) => runs.filter((r) => r.id === id).length;
  for (const id of ids.ok) {
    expect(byId.get(id)).toMatchObject({ state: 'success', attempt: 1 });
    expect(runsOf(id)).toBe(1);
  }
  for (const id of ids.bad) {
    expect(byId.get(id)).toMatchObject({ state: 'error', attempt: 2, lastError: 'fails by design' });
    expect(runsOf(id)).toBe(2);
  }
  for (const id of ids.slow) {
    expect(byId.get(id)).toMatchObject({ state: 'timeout', attempt: 1, lastError: 'timed out after 100 ms' });
    expect(runsOf(id)).toBe(1);
  }
}

describe('task producer and runners placed on different nodes (in-process fabric, messages encoded as on the wire)', () => {
  it('all on one node and split over three give the same result', async () => {
    const one = new PGliteTaskStore();
    stores.push(one);
    await one.migrate();
    const ids = await workload(one);
    await start(one, 'solo');
    await verify(one, ids);
    await agents.splice(0)[0]?.stop();
    runs.length = 0;

    // The same store (an embedded one is slow to start): the second workload is told apart by its ids.
    const split = one;
    const fabric = new MemoryFabric();
    const a = await start(split, 'a', fabric);
    const b = await start(split, 'b', fabric);
    const c = await start(split, 'c', fabric);
    const splitIds = await workload(split);
    await verify(split, splitIds);
    // The runners' nodes ran every task, each under its own lease owner: the producer's node ran none.
    const owners = new Set(runs.map((r) => r.claimant.slice(0, r.claimant.indexOf('/'))));
    expect(owners.has('a')).toBe(false);
    expect([...owners].every((o) => o === 'b' || o === 'c')).toBe(true);
    expect(b.tasks?.owner).not.toBe(c.tasks?.owner);
    expect(a.tasks?.owner.startsWith('a/')).toBe(true);
  }, 120_000);

  it("a graceful stop of the producer's node leaves the runners' tasks with them; a runner's node stop hands back its own", async () => {
    const store = new PGliteTaskStore();
    stores.push(store);
    await store.migrate();
    const fabric = new MemoryFabric();
    const a = await start(store, 'a', fabric);
    const b = await start(store, 'b', fabric);
    await store.enqueue(Array.from({ length: 4 }, () => ({ name: 'hang', options: { timeoutMs: 60_000 } })));
    await waitFor(
      async () => (await store.list({ state: 'running' })).filter((t) => t.leaseOwner === b.tasks?.owner).length === 4,
      'b to hold all four',
    );
    await a.stop();
    expect((await store.list({ state: 'running' })).map((t) => t.leaseOwner)).toEqual(Array(4).fill(b.tasks?.owner));
    await b.stop();
    const after = await store.list({});
    expect(after.map((t) => [t.state, t.attempt, t.leaseOwner])).toEqual(Array(4).fill(['waiting', 0, null]));
  });

  it('a refused outcome and a lost lease are logged with the task and counted in the metrics', async () => {
    const store = new PGliteTaskStore();
    stores.push(store);
    await store.migrate();
    const fabric = new MemoryFabric();
    const lines: Record<string, unknown>[] = [];
    const capture = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    await start(store, 'a', fabric);
    const b = await start(store, 'b', fabric, capture);
    const open = gate('first');
    gate('second');
    const [first, second] = await store.enqueue([
      { name: 'gated', args: { gate: 'first' }, options: { maxAttempts: 1 } },
      { name: 'gated', args: { gate: 'second' }, options: { maxAttempts: 1 } },
    ]);
    const owner = b.tasks?.owner as string;
    await waitFor(
      async () => (await store.list({ state: 'running' })).filter((t) => t.leaseOwner === owner).length === 2,
      'b to hold both',
    );
    // Another node holds both now, as after b stalled past their leases.
    const claims = [first, second].map((t) => ({ id: t?.id as string, attempt: 1, claimant: owner }));
    expect(await store.adopt(claims, 'thief', 60_000)).toHaveLength(2);
    open();
    const logged = (msg: string) => lines.filter((l) => l.msg === msg);
    await waitFor(() => logged('task outcome refused: this run no longer holds the task').length === 1, 'the refusal to be logged');
    expect(logged('task outcome refused: this run no longer holds the task')[0]).toMatchObject({
      task: first?.id,
      attempt: 1,
      outcome: 'success',
      reason: 'lease-lost',
    });
    // The second's next extension is refused: its run is aborted.
    await waitFor(() => logged('task lease lost').length === 1, 'the lost lease to be logged', 10_000);
    expect(logged('task lease lost')[0]).toMatchObject({ task: second?.id, phase: 'running', result: 'run aborted' });
    const metrics = await b.metrics.render();
    expect(metrics).toMatch(/stagefabric_task_outcomes_refused_total\{[^}]*queue="default"[^}]*reason="lease-lost"[^}]*\} 1/);
    expect(metrics).toMatch(/stagefabric_task_leases_lost_total\{[^}]*phase="running"[^}]*\} 1/);
    expect(await store.get(second?.id as string)).toMatchObject({ state: 'running', leaseOwner: 'thief' });
  });
});
