/**
 * npm run bench:tasks [-- --json] [-- --tasks N]
 *
 * Enqueues N no-op tasks (default 20 000) in bulk and drains them with 50
 * running at once, for Stagefabric's PostgreSQL store co-located (producer
 * and runner in this process) and split (three agent processes over the
 * Redis transport: the producer on one, runners of 25 on two others, the
 * same store), the Redis (BullMQ) store split likewise, and, in the same
 * run against the same servers, graphile-worker (localQueue 500) and pg-boss
 * (batch fetch 1000). Then the enqueue-to-start latency of one task at a
 * time with idle workers. The BullMQ store against a bare BullMQ Worker is
 * bench/bullmq-bench.ts (npm run bench:bullmq).
 * DATABASE_URL and REDIS_URL name the servers (defaults: local ones).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { StageSystem } from '@stagefabric/runtime';
import { startTaskPipeline, TaskRegistry, type TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import { Queue } from 'bullmq';
import { Logger, makeWorkerUtils, run } from 'graphile-worker';
import { Redis } from 'ioredis';
import pg from 'pg';
import PgBoss from 'pg-boss';

const args = process.argv.slice(2);
const json = args.includes('--json');
const nArg = args.indexOf('--tasks');
const N = nArg >= 0 ? Number(args[nArg + 1]) : 20_000;
const SAMPLES = 100;
const CONCURRENCY = 50;
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ROOT = resolve(import.meta.dirname, '../..');
const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');
const SPLIT_HANDLERS = join(ROOT, 'bench/tasks-split-handlers.mjs');

interface Result {
  system: string;
  enqueue_per_s: number;
  process_per_s: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
}

/** What a system must offer the benchmark: bulk enqueue, a drain with a handler, one task at a time. */
interface System {
  readonly name: string;
  setup(onTask: () => void): Promise<void>;
  enqueue(count: number): Promise<void>;
  startWorkers(): Promise<void>;
  teardown(): Promise<void>;
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] as number;

async function measure(system: System): Promise<Result> {
  let handled = 0;
  let onHandled: (() => void) | undefined;
  await system.setup(() => {
    handled++;
    onHandled?.();
  });
  // Tasks a system ran while it set up (a warm-up) are not the drain's.
  const before = handled;
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000) await system.enqueue(Math.min(1000, N - i));
  const enqueueS = (performance.now() - t0) / 1000;
  const drained = new Promise<void>((resolve) => {
    onHandled = () => handled - before >= N && resolve();
  });
  const t1 = performance.now();
  await system.startWorkers();
  await drained;
  const processS = (performance.now() - t1) / 1000;
  // Latency: one task at a time into idle workers.
  const latencies: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const before = handled;
    const started = performance.now();
    const ran = new Promise<void>((resolve) => {
      onHandled = () => handled > before && resolve();
    });
    await system.enqueue(1);
    await ran;
    latencies.push(performance.now() - started);
  }
  await system.teardown();
  return {
    system: system.name,
    enqueue_per_s: Math.round(N / enqueueS),
    process_per_s: Math.round(N / processS),
    latency_p50_ms: Number(quantile(latencies, 0.5).toFixed(2)),
    latency_p99_ms: Number(quantile(latencies, 0.99).toFixed(2)),
  };
}

async function dropSchema(schema: string) {
  const c = new pg.Client({ connectionString: DATABASE_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
}

/** Stagefabric's producer and runner on a store: 50 running, 450 more prefetched. */
function stagefabric(name: string, open: () => Promise<TaskStore>, cleanup: () => Promise<void>): System {
  let store: TaskStore;
  let system: StageSystem;
  let registry: TaskRegistry;
  return {
    name,
    async setup(onTask) {
      store = await open();
      registry = new TaskRegistry().register('noop', onTask);
    },
    enqueue: async (count) => void (await store.enqueue(Array.from({ length: count }, () => ({ name: 'noop' })))),
    async startWorkers() {
      system = new StageSystem();
      await startTaskPipeline(system, {
        store,
        registry,
        owner: 'bench',
        pollIntervalMs: 1000,
        concurrency: CONCURRENCY,
        maxDemand: 500,
        minDemand: 250,
      });
    },
    async teardown() {
      await system.shutdown();
      await store.close();
      await cleanup();
    },
  };
}

/**
 * The same producer and runners as three agent processes over the Redis
 * transport: the producer on node a, runners of 25 (maxDemand 250) on b
 * and c, the same store. The agents start before the drain and run a task
 * on each runner first; the drained tasks are enqueued not yet due and come
 * due at once when the drain starts, so the figure leaves out agent start-up.
 */
function stagefabricSplit(
  name: string,
  kind: 'postgres' | 'bullmq',
  open: () => Promise<TaskStore>,
  comeDue: (store: TaskStore) => Promise<void>,
  tasksConfig: Record<string, string>,
  cleanup: () => Promise<void>,
): System {
  let store: TaskStore;
  let due = false;
  const agents: ChildProcess[] = [];
  const channel = `bench-split-${randomUUID().slice(0, 8)}`;
  const namespace = `benchsplit${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(join(tmpdir(), 'sf-bench-split-'));
  const subscriber = new Redis(REDIS_URL);
  return {
    name,
    async setup(onTask) {
      store = await open();
      const topology = join(dir, 'topology.yaml');
      writeFileSync(
        topology,
        `tasks: { handlers: ${SPLIT_HANDLERS}${Object.entries(tasksConfig)
          .map(([k, v]) => `, ${k}: ${v}`)
          .join('')} }
stages:
  tasks: { module: stagefabric:task-producer, args: { pollIntervalMs: 1000 }, nodes: [a] }
  runner: { module: stagefabric:task-runner, args: { concurrency: ${CONCURRENCY / 2} }, nodes: [b, c], subscribe: [{ to: tasks, maxDemand: 250, minDemand: 125 }] }
`,
      );
      const seen = new Set<string>();
      await subscriber.subscribe(channel);
      subscriber.on('message', (_channel: string, message: string) => {
        const [node, n] = message.split(':') as [string, string];
        seen.add(node);
        for (let i = 0; i < Number(n); i++) onTask();
      });
      for (const node of ['a', 'b', 'c']) {
        agents.push(
          spawn(process.execPath, [STAGECTL, 'up', topology, '--node', node], {
            env: {
              ...process.env,
              REDIS_URL,
              DATABASE_URL: kind === 'postgres' ? DATABASE_URL : '',
              STAGEFABRIC_NODE: node,
              STAGEFABRIC_NAMESPACE: namespace,
              LOG_LEVEL: 'warn',
              BENCH_REDIS_URL: REDIS_URL,
              BENCH_CHANNEL: channel,
            },
            stdio: ['ignore', 'ignore', 'inherit'],
          }),
        );
      }
      // A benchmark that fails leaves no agent behind.
      process.once('exit', () => {
        for (const child of agents) child.kill('SIGKILL');
      });
      // Warm up: a task at a time until both runners have run one, so both are subscribed.
      const deadline = Date.now() + 60_000;
      while (!(seen.has('b') && seen.has('c'))) {
        if (Date.now() > deadline) throw new Error(`${name}: the runners did not start within 60 s`);
        await store.enqueue([{ name: 'noop' }]);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async enqueue(count) {
      // Before the drain, tasks wait (an hour ahead) and come due together when it starts.
      const options = due ? {} : { delayMs: 3_600_000 };
      await store.enqueue(Array.from({ length: count }, () => ({ name: 'noop', options })));
    },
    async startWorkers() {
      due = true;
      await comeDue(store);
    },
    async teardown() {
      const stop = (child: ChildProcess) =>
        new Promise<void>((done) => {
          child.once('exit', () => done());
          child.kill('SIGTERM');
        });
      // Runners first, as a graceful stop of the fabric goes: consumers before their producer.
      await Promise.all(agents.slice(1).map(stop));
      await Promise.all(agents.slice(0, 1).map(stop));
      subscriber.disconnect();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
      const redis = new Redis(REDIS_URL);
      for (const pattern of [`sf:${namespace}:*`]) {
        const keys = await redis.keys(pattern);
        if (keys.length > 0) await redis.del(...keys);
      }
      await redis.quit();
      await cleanup();
    },
  };
}

function graphile(): System {
  const schema = `gw_bench_${randomUUID().slice(0, 8)}`;
  let utils: Awaited<ReturnType<typeof makeWorkerUtils>>;
  let runner: Awaited<ReturnType<typeof run>> | undefined;
  let onTask: () => void = () => {};
  return {
    name: 'graphile-worker (localQueue 500)',
    async setup(cb) {
      onTask = cb;
      utils = await makeWorkerUtils({ connectionString: DATABASE_URL, schema });
      await utils.migrate();
    },
    enqueue: async (count) => void (await utils.addJobs(Array.from({ length: count }, () => ({ identifier: 'noop', payload: {} })))),
    async startWorkers() {
      runner = await run({
        connectionString: DATABASE_URL,
        schema,
        concurrency: CONCURRENCY,
        noHandleSignals: true,
        pollInterval: 1000,
        taskList: { noop: async () => onTask() },
        preset: { worker: { localQueue: { size: 500 } } },
        // Its default logger writes a line per job; the others log nothing per job either.
        logger: new Logger(() => () => {}),
      });
    },
    async teardown() {
      await runner?.stop();
      await utils.release();
      await dropSchema(schema);
    },
  };
}

function pgBoss(): System {
  const schema = `pgb_bench_${randomUUID().slice(0, 8)}`;
  let boss: PgBoss;
  let onTask: () => void = () => {};
  return {
    name: 'pg-boss (batch 1000)',
    async setup(cb) {
      onTask = cb;
      boss = new PgBoss({ connectionString: DATABASE_URL, schema });
      boss.on('error', () => {});
      await boss.start();
      await boss.createQueue('noop');
    },
    enqueue: async (count) => void (await boss.insert(Array.from({ length: count }, () => ({ name: 'noop', data: {} })))),
    async startWorkers() {
      await boss.work('noop', { batchSize: 1000, pollingIntervalSeconds: 0.5 }, async (jobs) => {
        for (const _ of jobs) onTask();
      });
    },
    async teardown() {
      await boss.stop({ graceful: false, wait: true });
      await dropSchema(schema);
    },
  };
}

async function dropKeys(prefix: string) {
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
}

const results: Result[] = [];
const sfSchema = `sf_bench_${randomUUID().slice(0, 8)}`;
const sfSplitSchema = `sf_bench_split_${randomUUID().slice(0, 8)}`;
const sfSplitPrefix = `sfbenchsplit${randomUUID().slice(0, 8)}`;
const systems: (() => System)[] = [
  () =>
    stagefabric(
      'stagefabric-postgres',
      async () => {
        const store = new PostgresTaskStore({ url: DATABASE_URL, schema: sfSchema });
        await store.migrate();
        return store;
      },
      () => dropSchema(sfSchema),
    ),
  () =>
    stagefabricSplit(
      'stagefabric-postgres, split',
      'postgres',
      async () => {
        const store = new PostgresTaskStore({ url: DATABASE_URL, schema: sfSplitSchema });
        await store.migrate();
        return store;
      },
      async () => {
        const c = new pg.Client({ connectionString: DATABASE_URL });
        await c.connect();
        await c.query(`UPDATE ${sfSplitSchema}.tasks SET run_at = now() WHERE state = 'waiting'`);
        await c.query('SELECT pg_notify($1, $2)', [`${sfSplitSchema}_enqueued`, 'default']);
        await c.end();
      },
      { schema: sfSplitSchema },
      () => dropSchema(sfSplitSchema),
    ),
  () =>
    stagefabricSplit(
      'stagefabric-bullmq, split',
      'bullmq',
      async () => new BullMQTaskStore({ url: REDIS_URL, prefix: sfSplitPrefix }),
      async () => {
        const { hostname, port } = new URL(REDIS_URL);
        const queue = new Queue('default', { prefix: sfSplitPrefix, connection: { host: hostname, port: Number(port || 6379) } });
        await queue.promoteJobs();
        await queue.close();
        const redis = new Redis(REDIS_URL);
        await redis.publish(`${sfSplitPrefix}:stagefabric-enqueued`, 'default');
        await redis.quit();
      },
      { store: 'bullmq', prefix: sfSplitPrefix },
      () => dropKeys(sfSplitPrefix),
    ),
  graphile,
  pgBoss,
];
for (const make of systems) results.push(await measure(make()));
if (json) for (const r of results) console.log(JSON.stringify(r));
else {
  console.log(
    `${N.toLocaleString('en')} no-op tasks, ${CONCURRENCY} running at once; latency over ${SAMPLES} single tasks into idle workers`,
  );
  console.log('system                              enqueue/s   process/s   p50 ms   p99 ms');
  for (const r of results) {
    console.log(
      `${r.system.padEnd(36)}${String(r.enqueue_per_s).padStart(9)}${String(r.process_per_s).padStart(12)}${String(r.latency_p50_ms).padStart(9)}${String(r.latency_p99_ms).padStart(9)}`,
    );
  }
}
process.exit(0);
