import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NewTask, TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterEach, describe, expect, inject, it, onTestFailed } from 'vitest';
import { parse, stringify } from 'yaml';
import { type AgentProcess, killAll, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';
import { startLocalPostgres, startLocalRedis } from '../support/servers.js';

/**
 * The placement matrix of the task topologies: the example task runner and
 * the built-in producer and runner, each all on one node and split over
 * three agent processes (the producer on one, runners on two others), on
 * PostgreSQL, BullMQ and (one node) embedded PGlite, with the same verified
 * result: every task in the state its handler earned, each success's effect
 * once. Then kill -9 of the producer's node and of a runner's node with
 * tasks in flight, and a task whose run kills its node.
 */

const sharedDatabaseUrl = inject('databaseUrl');
const sharedRedisUrl = inject('redisUrl');
const HANDLERS = join(ROOT, 'test/tasks/placement-handlers.mjs');
const EXAMPLE = join(ROOT, 'examples/tasks');
const LEASE_MS = 2000;

type StoreKind = 'postgres' | 'pglite' | 'bullmq';
type Placement = 'one node' | 'split';
const NODES: Record<Placement, { producer: string[]; runners: string[] }> = {
  'one node': { producer: ['solo'], runners: ['solo'] },
  split: { producer: ['p'], runners: ['r1', 'r2'] },
};

interface Final {
  readonly id: string;
  readonly name: string;
  readonly state: string;
  readonly attempt: number;
  readonly lastError: string | null;
}

afterEach(async () => {
  await killAll();
});

/** A schema (the store's and the checker's tables), a BullMQ prefix, a fabric namespace: one scenario's own; servers of its own when given. */
async function scenario(kind: StoreKind, placement: Placement, servers: { databaseUrl?: string; redisUrl?: string } = {}) {
  const databaseUrl = servers.databaseUrl ?? sharedDatabaseUrl;
  const redisUrl = servers.redisUrl ?? sharedRedisUrl;
  const tag = randomUUID().slice(0, 8);
  const schema = `sf_p${tag}`;
  const prefix = `sfp${tag}`;
  const admin = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  admin.on('error', () => {});
  await admin.query(`CREATE SCHEMA ${schema};
    CREATE TABLE ${schema}.runs (task_id text NOT NULL, attempt integer NOT NULL, node text NOT NULL, handler text NOT NULL, at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE ${schema}.effects (task_id text NOT NULL);
    CREATE TABLE ${schema}.final (task_id text NOT NULL, name text, state text NOT NULL, attempt integer NOT NULL, last_error text);`);
  let store: TaskStore | undefined;
  if (kind === 'postgres') {
    store = new PostgresTaskStore({ url: databaseUrl, schema });
    await store.migrate();
  } else if (kind === 'bullmq') store = new BullMQTaskStore({ url: redisUrl, prefix });
  const fabric = await testFabric(redisUrl);
  const tasksConfig = {
    schema,
    ...(kind === 'bullmq' ? { store: 'bullmq', prefix } : kind === 'pglite' ? { store: 'pglite' } : {}),
  };
  const env = (node: string, extra: Record<string, string> = {}): Record<string, string> => ({
    STAGEFABRIC_NODE: node,
    PLACEMENT_SCHEMA: schema,
    PLACEMENT_DATABASE_URL: databaseUrl,
    // The effect commits with the success where the store is the same database; elsewhere it is keyed by the task.
    PLACEMENT_EFFECTS: kind === 'postgres' ? 'with-success' : 'keyed',
    DATABASE_URL: kind === 'postgres' ? databaseUrl : '',
    // One node on PostgreSQL or PGlite runs in one process; BullMQ needs Redis for its store anyway.
    REDIS_URL: placement === 'split' || kind === 'bullmq' ? redisUrl : '',
    ...extra,
  });
  const agents: AgentProcess[] = [];
  // A failure shows what the agents warned of: refused outcomes, lost leases, restarts.
  onTestFailed(() => {
    for (const a of agents)
      console.log(
        a.stderr
          .split('\n')
          .filter((l) => /"level":(40|50)/.test(l))
          .join('\n'),
      );
  });
  const start = (topology: string, node: string, extra?: Record<string, string>) => {
    const agent = fabric.agent(topology, node, env(node, extra));
    agents.push(agent);
    return agent;
  };
  const count = async (sql: string) => Number((await admin.query(sql)).rows[0]?.n ?? 0);
  /** Every task of the store, as it stands (PGlite: as its agent reported them once all were final). */
  const finals = async (): Promise<Final[]> => {
    if (store instanceof BullMQTaskStore)
      return (await store.list({ limit: 1_000_000 })).map((t) => ({
        id: t.id,
        name: t.name,
        state: t.state,
        attempt: t.attempt,
        lastError: t.lastError,
      }));
    const table = kind === 'postgres' ? `${schema}.tasks` : `${schema}.final`;
    const id = kind === 'postgres' ? 'id::text' : 'task_id';
    return (await admin.query(`SELECT ${id} AS id, name, state, attempt, last_error AS "lastError" FROM ${table}`)).rows as Final[];
  };
  /** Tasks running under a lease owner of `node` (its runners took them over). */
  const heldBy = async (node: string): Promise<string[]> =>
    ((await store?.list({ state: 'running', limit: 1_000_000 })) ?? [])
      .filter((t) => t.leaseOwner?.startsWith(`${node}/`))
      .map((t) => t.id);
  const perTask = async (table: 'runs' | 'effects') =>
    new Map(
      (
        (await admin.query(`SELECT task_id, count(*)::int AS n FROM ${schema}.${table} GROUP BY task_id`)).rows as {
          task_id: string;
          n: number;
        }[]
      ).map((r) => [r.task_id, r.n]),
    );
  const cleanup = async () => {
    await killAll();
    await store?.close();
    await admin.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
    await admin.end();
  };
  /** The built-in producer and runner, placed. */
  const builtins = (args: { concurrency?: number; maxDemand?: number } = {}) =>
    fabric.topology(
      stringify({
        tasks: { handlers: HANDLERS, ...tasksConfig },
        stages: {
          tasks: {
            module: 'stagefabric:task-producer',
            args: { pollIntervalMs: 200, leaseMs: LEASE_MS },
            ...(placement === 'split' ? { nodes: NODES.split.producer } : {}),
          },
          runner: {
            module: 'stagefabric:task-runner',
            args: { leaseMs: LEASE_MS, concurrency: args.concurrency ?? 8, backoff: { baseMs: 50, maxMs: 200 } },
            ...(placement === 'split' ? { nodes: NODES.split.runners } : {}),
            subscribe: [{ to: 'tasks', maxDemand: args.maxDemand ?? 16 }],
          },
        },
      }),
    );
  /** The example task runner's topology, its handlers compiled beside it, placed. */
  const example = () => {
    const topology = parse(readFileSync(join(EXAMPLE, 'topology.yaml'), 'utf8'));
    topology.tasks = { ...topology.tasks, handlers: join(EXAMPLE, 'handlers.js'), ...tasksConfig };
    if (placement === 'split') {
      topology.stages.tasks.nodes = NODES.split.producer;
      topology.stages.runner.nodes = NODES.split.runners;
    }
    return fabric.topology(stringify(topology));
  };
  return { kind, placement, schema, store, admin, agents, start, count, finals, heldBy, perTask, cleanup, builtins, example };
}

type Scenario = Awaited<ReturnType<typeof scenario>>;

/** Tasks that succeed (some a little slowly), fail on both their attempts, and time out on both. */
const MIXED: NewTask[] = [
  ...Array.from({ length: 240 }, (_, i) => ({ name: 'succeed', args: { sleepMs: i % 6 === 0 ? 40 : 0 }, options: { maxAttempts: 3 } })),
  ...Array.from({ length: 8 }, () => ({ name: 'fail', options: { maxAttempts: 2 } })),
  ...Array.from({ length: 6 }, () => ({ name: 'hang', options: { maxAttempts: 2, timeoutMs: 300 } })),
];

/** Starts the placement's agents on `topology`: the producer's node first, so its runners find it. */
function startAll(s: Scenario, topology: string, extra?: Record<string, string>): AgentProcess[] {
  const nodes = [...new Set([...NODES[s.placement].producer, ...NODES[s.placement].runners])];
  return nodes.map((node) => s.start(topology, node, extra));
}

/** Every task final, each in the state its handler earned; each success's effect once; with `exact`, each success run once and each failure once per attempt. */
async function expectEarned(s: Scenario, total: number, exact: boolean): Promise<Final[]> {
  let all: Final[] = [];
  await waitFor(
    async () => {
      // A server of the scenario's may be restarting: look again.
      all = await s.finals().catch(() => []);
      return all.length === total && all.every((t) => t.state !== 'waiting' && t.state !== 'running');
    },
    `all ${total} tasks to be final`,
    120_000,
    100,
  );
  const runs = await s.perTask('runs');
  const effects = await s.perTask('effects');
  const wrong: string[] = [];
  for (const t of all) {
    const ran = runs.get(t.id) ?? 0;
    const took = effects.get(t.id) ?? 0;
    if (t.name === 'succeed') {
      if (t.state !== 'success' || took !== 1) wrong.push(`${t.id} succeed: ${t.state}, ${took} effects`);
      if (exact && (ran !== 1 || t.attempt !== 1)) wrong.push(`${t.id} succeed: ${ran} runs, attempt ${t.attempt}`);
    } else if (t.name === 'fail') {
      if (t.state !== 'error' || t.lastError !== 'fails by design' || t.attempt !== 2 || took !== 0)
        wrong.push(`${t.id} fail: ${t.state} attempt ${t.attempt} (${t.lastError}), ${took} effects`);
      if (exact && ran !== 2) wrong.push(`${t.id} fail: ${ran} runs`);
    } else if (t.name === 'hang') {
      if (t.state !== 'timeout' || t.lastError !== 'timed out after 300 ms' || t.attempt !== 2)
        wrong.push(`${t.id} hang: ${t.state} attempt ${t.attempt} (${t.lastError})`);
      if (exact && ran !== 2) wrong.push(`${t.id} hang: ${ran} runs`);
    }
  }
  expect(wrong).toEqual([]);
  return all;
}

/** What the agents logged that a run without faults must not: a refused outcome, a lost lease, a dropped task event. */
function complaints(agents: readonly AgentProcess[]): string[] {
  return agents.flatMap((a) =>
    [
      'task outcome refused: this run no longer holds the task',
      'task lease lost',
      'task event dropped: not a task this runner can run',
    ].flatMap((msg) => a.logs(msg).map((l) => JSON.stringify(l))),
  );
}

const PLACEMENTS: [StoreKind, Placement][] = [
  ['pglite', 'one node'],
  ['postgres', 'one node'],
  ['postgres', 'split'],
  ['bullmq', 'one node'],
  ['bullmq', 'split'],
];

describe('placement matrix: the built-in task producer and runner', () => {
  for (const [kind, placement] of PLACEMENTS) {
    it(`${kind}, ${placement}: every task ends as its handler earned, each success's effect once, one run per success`, async () => {
      const s = await scenario(kind, placement);
      try {
        const topology = await s.builtins();
        if (kind === 'pglite') {
          // The store is the agent's own memory: it takes the workload in and reports the final states, then stops.
          const [agent] = startAll(s, topology, { PLACEMENT_WORKLOAD: JSON.stringify(MIXED) });
          expect(await agent?.exited).toBe(0);
        } else {
          const agents = startAll(s, topology);
          await s.store?.enqueue(MIXED);
          await expectEarned(s, MIXED.length, true);
          for (const a of agents) await a.kill('SIGTERM');
          expect(await Promise.all(agents.map((a) => a.exited))).toEqual(agents.map(() => 0));
        }
        await expectEarned(s, MIXED.length, true);
        expect(complaints(s.agents)).toEqual([]);
        if (placement === 'split') {
          // The runners' nodes ran every task; the producer's node ran none.
          const nodes = (await s.admin.query(`SELECT DISTINCT node FROM ${s.schema}.runs ORDER BY node`)).rows.map((r) => r.node);
          expect(nodes).toEqual(['r1', 'r2']);
        }
      } finally {
        await s.cleanup();
      }
    }, 180_000);
  }
});

describe('placement matrix: the example task runner (examples/tasks)', () => {
  for (const [kind, placement] of PLACEMENTS) {
    it(`${kind}, ${placement}: all 2000 tasks succeed, each run once, every agent stops by itself`, async () => {
      const s = await scenario(kind, placement);
      try {
        const agents = startAll(s, await s.example());
        expect(await Promise.all(agents.map((a) => a.exited))).toEqual(agents.map(() => 0));
        const producer = agents[0] as AgentProcess;
        expect(producer.stdout).toContain('enqueued 2000 tasks');
        for (const a of agents) expect(a.stdout).toMatch(/all 2000 tasks succeeded in [\d.]+ s/);
        if (kind === 'pglite') expect(producer.stdout).toContain('states: [{"queue":"default","state":"success","count":2000}]');
        else {
          const all = await s.finals();
          expect(all).toHaveLength(2000);
          expect(all.filter((t) => t.state !== 'success' || t.attempt !== 1)).toEqual([]);
        }
        expect(complaints(agents)).toEqual([]);
      } finally {
        await s.cleanup();
      }
    }, 180_000);
  }
});

/** Slow successes, so tasks are in flight on every node when one is killed. */
const SLOW: NewTask[] = Array.from({ length: 120 }, () => ({ name: 'succeed', args: { sleepMs: 300 }, options: { maxAttempts: 3 } }));

describe('placement matrix: kill -9 with tasks in flight (producer on p, runners on r1 and r2)', () => {
  for (const kind of ['postgres', 'bullmq'] as const) {
    it(`${kind}: kill -9 of the producer's node: what the runners took over finishes there, once; the rest is claimed again`, async () => {
      const s = await scenario(kind, 'split');
      try {
        const topology = await s.builtins();
        const [producer] = startAll(s, topology);
        await s.store?.enqueue(SLOW);
        await waitFor(
          async () => (await s.heldBy('r1')).length + (await s.heldBy('r2')).length >= 8 && (await s.perTask('effects')).size >= 8,
          'runners to hold running tasks',
          30_000,
          50,
        );
        await producer?.kill('SIGKILL');
        s.start(topology, 'p');
        await expectEarned(s, SLOW.length, false);
        // Nothing ran twice: runs the runners held drained on their nodes, and claims lost with the producer never ran.
        const twice = [...(await s.perTask('runs'))].filter(([, n]) => n > 1);
        expect(twice).toEqual([]);
        expect(s.agents.flatMap((a) => a.logs('task outcome refused: this run no longer holds the task'))).toEqual([]);
      } finally {
        await s.cleanup();
      }
    }, 180_000);

    it(`${kind}: kill -9 of a runner's node: its tasks come back when their leases lapse and succeed once on the other`, async () => {
      const s = await scenario(kind, 'split');
      try {
        const topology = await s.builtins();
        const agents = startAll(s, topology);
        await s.store?.enqueue(SLOW);
        let held: string[] = [];
        await waitFor(
          async () => {
            held = await s.heldBy('r1');
            return held.length >= 4;
          },
          'r1 to hold running tasks',
          30_000,
          50,
        );
        await agents[1]?.kill('SIGKILL');
        const atKill = new Set([...held, ...(await s.heldBy('r1'))]);
        const all = await expectEarned(s, SLOW.length, false);
        // Only tasks r1 held ran again, each with its lease lapse counted as an attempt.
        const again = [...(await s.perTask('runs'))].filter(([, n]) => n > 1).map(([id]) => id);
        expect(again.filter((id) => !atKill.has(id))).toEqual([]);
        for (const id of again) expect(all.find((t) => t.id === id)?.attempt).toBe(2);
        expect(
          s.agents.flatMap((a) => a.logs('tasks whose leases lapsed went back to waiting, or failed on their last attempt')).length,
        ).toBeGreaterThan(0);
      } finally {
        await s.cleanup();
      }
    }, 180_000);

    it(`${kind}: a task whose run kills its node fails for good after maxAttempts; the others succeed`, async () => {
      const s = await scenario(kind, 'split');
      let ending = false;
      try {
        const topology = await s.builtins();
        startAll(s, topology);
        // A runner's node that dies comes back, as its supervisor (systemd, Kubernetes) would bring it.
        const keep = (agent: AgentProcess | undefined, node: string) =>
          void agent?.exited.then(() => {
            if (!ending) keep(s.start(topology, node), node);
          });
        keep(s.agents[1], 'r1');
        keep(s.agents[2], 'r2');
        const [crash] = (await s.store?.enqueue([{ name: 'crash', options: { maxAttempts: 2 } }])) ?? [];
        await s.store?.enqueue(SLOW.slice(0, 40));
        let all: Final[] = [];
        await waitFor(
          async () => {
            all = await s.finals();
            return all.length === 41 && all.every((t) => t.state !== 'waiting' && t.state !== 'running');
          },
          'every task to be final',
          120_000,
          100,
        );
        ending = true;
        expect(all.find((t) => t.id === crash?.id)).toMatchObject({ state: 'error', attempt: 2 });
        expect(all.find((t) => t.id === crash?.id)?.lastError).toMatch(/expired on its last attempt \(2 of 2\)/);
        expect((await s.perTask('runs')).get(crash?.id as string)).toBe(2);
        expect(all.filter((t) => t.id !== crash?.id && t.state !== 'success')).toEqual([]);
        expect([...(await s.perTask('effects')).values()].every((n) => n === 1)).toBe(true);
      } finally {
        ending = true;
        await s.cleanup();
      }
    }, 180_000);
  }
});

describe('placement matrix: both nodes killed, and the servers restarted, with tasks in flight (producer on p, runners on r1 and r2)', () => {
  for (const kind of ['postgres', 'bullmq'] as const) {
    it(`${kind}: kill -9 of the producer's node and a runner's node at once, both started again: every task succeeds, each effect once`, async () => {
      const s = await scenario(kind, 'split');
      try {
        const topology = await s.builtins();
        const [producer, r1] = startAll(s, topology);
        await s.store?.enqueue(SLOW);
        await waitFor(async () => (await s.heldBy('r1')).length >= 4, 'r1 to hold running tasks', 30_000, 50);
        await Promise.all([producer?.kill('SIGKILL'), r1?.kill('SIGKILL')]);
        s.start(topology, 'p');
        s.start(topology, 'r1');
        await expectEarned(s, SLOW.length, false);
      } finally {
        await s.cleanup();
      }
    }, 180_000);

    it(`${kind}: Redis restarts (kill -9, append-only file) with tasks in flight: every task succeeds, each effect once`, async () => {
      const redis = await startLocalRedis(['--appendonly', 'yes', '--appendfsync', 'always']);
      try {
        const s = await scenario(kind, 'split', { redisUrl: redis.url });
        try {
          const topology = await s.builtins();
          startAll(s, topology);
          await s.store?.enqueue(SLOW);
          await waitFor(async () => (await s.perTask('effects')).size >= 20, 'the drain to be under way', 30_000, 50);
          await redis.restart('SIGKILL');
          await expectEarned(s, SLOW.length, false);
        } finally {
          await s.cleanup();
        }
      } finally {
        await redis.stop();
      }
    }, 180_000);
  }

  it('postgres: PostgreSQL restarts with tasks in flight: every task succeeds, each effect once', async () => {
    const postgres = await startLocalPostgres();
    try {
      const s = await scenario('postgres', 'split', { databaseUrl: postgres.url });
      try {
        const topology = await s.builtins();
        startAll(s, topology);
        await s.store?.enqueue(SLOW);
        await waitFor(async () => (await s.perTask('effects')).size >= 20, 'the drain to be under way', 30_000, 50);
        await postgres.restart();
        await expectEarned(s, SLOW.length, false);
      } finally {
        await s.cleanup().catch(() => {});
      }
    } finally {
      await postgres.stop();
    }
  }, 180_000);
});
