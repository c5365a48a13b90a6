/**
 * npm run bench:tasks [-- --json] [-- --tasks N]
 *
 * Enqueues N no-op tasks (default 20 000) in bulk and drains them with 50
 * running at once, for Stagefabric's PostgreSQL and Redis (BullMQ) stores and, in the same run
 * against the same servers, graphile-worker (localQueue 500), pg-boss
 * (batch fetch 1000) and a bare BullMQ Worker (concurrency 50). Then the
 * enqueue-to-start latency of one task at a time with idle workers.
 * DATABASE_URL and REDIS_URL name the servers (defaults: local ones).
 */
import { randomUUID } from 'node:crypto';
import { StageSystem } from '@stagefabric/runtime';
import { startTaskPipeline, TaskRegistry, type TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import { Queue, Worker } from 'bullmq';
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
  const t0 = performance.now();
  for (let i = 0; i < N; i += 1000) await system.enqueue(Math.min(1000, N - i));
  const enqueueS = (performance.now() - t0) / 1000;
  const drained = new Promise<void>((resolve) => {
    onHandled = () => handled >= N && resolve();
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

function bullmq(): System {
  const name = `bench-${randomUUID().slice(0, 8)}`;
  const { hostname, port } = new URL(REDIS_URL);
  const connection = { host: hostname, port: Number(port || 6379) };
  let queue: Queue;
  let worker: Worker | undefined;
  let onTask: () => void = () => {};
  return {
    name: 'bullmq Worker (concurrency 50)',
    async setup(cb) {
      onTask = cb;
      queue = new Queue(name, { connection });
    },
    enqueue: async (count) =>
      void (await queue.addBulk(Array.from({ length: count }, () => ({ name: 'noop', data: {}, opts: { removeOnComplete: true } })))),
    async startWorkers() {
      worker = new Worker(name, async () => onTask(), { connection, concurrency: CONCURRENCY });
    },
    async teardown() {
      await worker?.close();
      await queue.obliterate({ force: true });
      await queue.close();
    },
  };
}

const results: Result[] = [];
const sfSchema = `sf_bench_${randomUUID().slice(0, 8)}`;
const sfPrefix = `sfbench${randomUUID().slice(0, 8)}`;
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
    stagefabric(
      'stagefabric-bullmq',
      async () => new BullMQTaskStore({ url: REDIS_URL, prefix: sfPrefix }),
      async () => {
        const redis = new Redis(REDIS_URL);
        const keys = await redis.keys(`${sfPrefix}:*`);
        if (keys.length > 0) await redis.del(...keys);
        await redis.quit();
      },
    ),
  graphile,
  pgBoss,
  bullmq,
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
