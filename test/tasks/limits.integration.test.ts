import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { killAll, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';

const databaseUrl = inject('databaseUrl');
const redisUrl = inject('redisUrl');
const HANDLERS = join(ROOT, 'test/tasks/limit-handlers.mjs');

afterEach(async () => {
  await killAll();
});

interface Run {
  readonly queue: string;
  readonly grp: string | null;
  /** The task's place in its enqueue batch. */
  readonly n: number;
  readonly node: string;
  readonly claimed: number;
  readonly started: number;
  readonly ended: number;
}

/** The most runs in progress at once, from their own start and end records (an end before a start at the same ms). */
function maxConcurrent(runs: readonly Run[]): number {
  const edges = runs.flatMap((r) => [
    [r.started, 1],
    [r.ended, -1],
  ]);
  edges.sort((a, b) => (a[0] as number) - (b[0] as number) || (a[1] as number) - (b[1] as number));
  let now = 0;
  let max = 0;
  for (const [, d] of edges) {
    now += d as number;
    max = Math.max(max, now);
  }
  return max;
}

/** The most starts within any window of `windowMs` (starts at t and t + windowMs fall in different windows). */
function maxPerWindow(times: readonly number[], windowMs: number): number {
  const starts = [...times].sort((a, b) => a - b);
  let max = 0;
  let from = 0;
  for (let i = 0; i < starts.length; i++) {
    while ((starts[i] as number) - (starts[from] as number) >= windowMs) from++;
    max = Math.max(max, i - from + 1);
  }
  return max;
}

/**
 * A rate bounds claims, the store's starts. A handler knows its task's claim from the lease it was handed (the
 * store's clock on PostgreSQL; on BullMQ the claiming node's, read a round trip after Redis counted the start),
 * so claims are counted in windows this much shorter than the interval. A handler's own start lags its claim by
 * the delivery from producer to runner, which on a booting agent was up to ~200 ms: reported, not asserted.
 */
const CLAIM_CLOCK_SLACK_MS = 50;
const LEASE_MS = 10_000;

/** The limits every agent's topology declares: the store enforces them in its claim for all four at once. */
const LIMITS = {
  conc: { concurrency: 3 },
  rated: { rate: { max: 4, intervalMs: 1000 } },
  grouped: { concurrency: 4, group: { concurrency: 1 } },
  ordered: { group: { ordered: true } },
} as const;

async function limitsSetup(kind: 'postgres' | 'bullmq') {
  const tag = randomUUID().slice(0, 8);
  const schema = `sf_l${tag}`;
  const prefix = `sfl${tag}`;
  const runs = `${schema}.task_runs`;
  const admin = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  admin.on('error', () => {});
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.query(
    `CREATE TABLE ${runs} (task_id text NOT NULL, queue text NOT NULL, grp text, n integer NOT NULL, node text NOT NULL,
       claimed_ms bigint NOT NULL, started_ms bigint NOT NULL, ended_ms bigint NOT NULL)`,
  );
  const store: TaskStore =
    kind === 'postgres' ? new PostgresTaskStore({ url: databaseUrl, schema }) : new BullMQTaskStore({ url: redisUrl, prefix });
  await store.migrate();
  const queues = kind === 'postgres' ? (['conc', 'rated', 'grouped', 'ordered'] as const) : (['conc', 'rated'] as const);
  const limits = Object.fromEntries(queues.map((q) => [q, LIMITS[q]]));
  const stages = queues
    .map(
      (q) => `
  produce_${q}: { module: stagefabric:task-producer, args: { queue: ${q}, pollIntervalMs: 500, leaseMs: ${LEASE_MS} } }
  run_${q}: { module: stagefabric:task-runner, args: { leaseMs: ${LEASE_MS}, concurrency: 8 }, subscribe: [{ to: produce_${q}, maxDemand: 8 }] }`,
    )
    .join('');
  const f = await testFabric(kind === 'postgres' ? 'redis://unused' : redisUrl);
  const topology = await f.topology(`
tasks:
  handlers: ${HANDLERS}
  ${kind === 'postgres' ? `schema: ${schema}` : `store: bullmq\n  prefix: ${prefix}`}
  limits: ${JSON.stringify(limits)}
stages:${stages}
`);
  const agent = (node: string) =>
    f.agent(topology, node, {
      DATABASE_URL: databaseUrl,
      TASK_RUNS_TABLE: runs,
      TASK_LEASE_MS: String(LEASE_MS),
      STAGEFABRIC_NODE: node,
      ...(kind === 'postgres' ? { REDIS_URL: '' } : {}),
    });
  const recorded = async (queue: string): Promise<Run[]> =>
    (
      await admin.query<{ grp: string | null; n: number; node: string; claimed_ms: string; started_ms: string; ended_ms: string }>(
        `SELECT grp, n, node, claimed_ms, started_ms, ended_ms FROM ${runs} WHERE queue = $1`,
        [queue],
      )
    ).rows.map((r) => ({
      queue,
      grp: r.grp,
      n: r.n,
      node: r.node,
      claimed: Number(r.claimed_ms),
      started: Number(r.started_ms),
      ended: Number(r.ended_ms),
    }));
  const cleanup = async () => {
    await store.close();
    await admin.query(`DROP SCHEMA ${schema} CASCADE`).catch(() => {});
    await admin.end();
  };
  return { store, agent, recorded, cleanup, queues };
}

describe.each(['postgres', 'bullmq'] as const)('limits across four agent processes (%s)', (kind) => {
  it('four agents racing on one store keep each queue limit: concurrency and rate; on SQL per-group concurrency and ordered groups; counted from the handlers’ records', async () => {
    const s = await limitsSetup(kind);
    try {
      await s.store.enqueue(
        Array.from({ length: 40 }, (_, n) => ({ name: 'timed', args: { n, sleepMs: 150 }, options: { queue: 'conc' } })),
      );
      await s.store.enqueue(
        Array.from({ length: 16 }, (_, n) => ({ name: 'timed', args: { n, sleepMs: 20 }, options: { queue: 'rated' } })),
      );
      if (kind === 'postgres') {
        // Ordered: each group's tasks enqueued interleaved with the others', with priorities that would reorder them.
        await s.store.enqueue(
          Array.from({ length: 24 }, (_, n) => {
            const group = `order-${n % 3}`;
            return { name: 'timed', args: { n, sleepMs: 30, group }, options: { queue: 'ordered', group, priority: -n } };
          }),
        );
      }
      if (kind === 'postgres')
        await s.store.enqueue(
          Array.from({ length: 24 }, (_, n) => {
            const group = `customer-${n % 4}`;
            return { name: 'timed', args: { n, sleepMs: 100, group }, options: { queue: 'grouped', group } };
          }),
        );
      const agents = ['w1', 'w2', 'w3', 'w4'].map((n) => s.agent(n));
      const total = kind === 'postgres' ? 104 : 56;
      await waitFor(
        async () => (await Promise.all(s.queues.map((q) => s.recorded(q)))).flat().length === total,
        `${total} runs recorded`,
        90_000,
      );
      const conc = await s.recorded('conc');
      const rated = await s.recorded('rated');
      const concMax = maxConcurrent(conc);
      const claimsMax = maxPerWindow(
        rated.map((r) => r.claimed),
        1000 - CLAIM_CLOCK_SLACK_MS,
      );
      const startsMax = maxPerWindow(
        rated.map((r) => r.started),
        1000,
      );
      const figures: Record<string, unknown> = { kind, concMax, concLimit: 3, claimsMax, startsMax, rateLimit: '4/1000ms' };
      // Held and used: the limit binds (the four agents could run 32 at once) and is reached.
      expect(concMax).toBeLessThanOrEqual(3);
      expect(concMax).toBeGreaterThanOrEqual(2);
      expect(claimsMax).toBeLessThanOrEqual(4);
      const rateSpan = Math.max(...rated.map((r) => r.claimed)) - Math.min(...rated.map((r) => r.claimed));
      // 16 starts at 4 per second take at least three full windows after the first.
      expect(rateSpan).toBeGreaterThanOrEqual(3000 - CLAIM_CLOCK_SLACK_MS);
      figures.rateSpanMs = rateSpan;
      if (kind === 'postgres') {
        const grouped = await s.recorded('grouped');
        const groups = new Map<string, Run[]>();
        for (const r of grouped) groups.set(r.grp ?? '', [...(groups.get(r.grp ?? '') ?? []), r]);
        const perGroup = [...groups.values()].map(maxConcurrent);
        expect(groups.size).toBe(4);
        figures.groupedQueueMax = maxConcurrent(grouped);
        figures.perGroupMax = Math.max(...perGroup);
        expect(Math.max(...perGroup)).toBe(1);
        expect(maxConcurrent(grouped)).toBeLessThanOrEqual(4);
        const ordered = await s.recorded('ordered');
        for (const g of ['order-0', 'order-1', 'order-2']) {
          const runsOf = ordered.filter((r) => r.grp === g).sort((a, b) => a.started - b.started);
          expect(runsOf.map((r) => r.n)).toEqual(runsOf.map((r) => r.n).sort((a, b) => a - b));
          expect(runsOf).toHaveLength(8);
          expect(maxConcurrent(runsOf)).toBe(1);
        }
        figures.orderedGroupsInOrder = true;
      }
      // The work was shared: the limits held across agents, not inside one.
      const nodes = new Set([...conc, ...rated].map((r) => r.node));
      figures.nodes = nodes.size;
      expect(nodes.size).toBeGreaterThan(1);
      console.log(`limits figures ${JSON.stringify(figures)}`);
      await Promise.all(agents.map((a) => a.kill('SIGTERM')));
      for (const a of agents) expect(await a.exited).toBe(0);
    } finally {
      await s.cleanup();
    }
  }, 150_000);
});

it('an agent whose topology asks BullMQ for per-group limits does not start: it exits 2 (bad input, SF_UNSUPPORTED) naming the store, the queue and the limit', async () => {
  const prefix = `sfl${randomUUID().slice(0, 8)}`;
  const f = await testFabric(redisUrl);
  const topology = await f.topology(`
tasks:
  handlers: ${HANDLERS}
  store: bullmq
  prefix: ${prefix}
  limits: { exports: { concurrency: 4, group: { concurrency: 1 } } }
stages:
  produce: { module: stagefabric:task-producer, args: { queue: exports } }
  run: { module: stagefabric:task-runner, subscribe: [produce] }
`);
  const agent = f.agent(topology, 'w1', { DATABASE_URL: databaseUrl, TASK_RUNS_TABLE: 'unused' });
  expect(await agent.exited).toBe(2);
  expect(agent.stderr).toMatch(
    /stagectl: tasks\.limits: limits of queue exports: the BullMQ task store cannot limit or order per group \(group\.concurrency/,
  );
}, 60_000);
