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
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
import { PgBoss } from 'pg-boss';
import { emitFigure, emitPoint } from './figures.js';

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
  key: string;
  subject: string;
  settings: Record<string, unknown>;
  enqueue_per_s: number;
  process_per_s: number;
  /** This process's CPU during the drain, per task (the split rows run their agents elsewhere). */
  cpu_us_per_task: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
}

/** What a system must offer the benchmark: bulk enqueue, a drain with a handler, one task at a time. */
interface System {
  readonly name: string;
  /** Figures' name prefix, e.g. `pg_store`, `graphile_worker_best`. */
  readonly key: string;
  /** Who: `stagefabric` or the peer's name and version. */
  readonly subject: string;
  readonly settings: Record<string, unknown>;
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
  const cpu0 = process.cpuUsage();
  await system.startWorkers();
  await drained;
  const processS = (performance.now() - t1) / 1000;
  const cpu = process.cpuUsage(cpu0);
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
    key: system.key,
    subject: system.subject,
    settings: system.settings,
    enqueue_per_s: Math.round(N / enqueueS),
    process_per_s: Math.round(N / processS),
    cpu_us_per_task: Number(((cpu.user + cpu.system) / N).toFixed(1)),
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
const PIPELINE = { concurrency: CONCURRENCY, maxDemand: 500, minDemand: 250, pollIntervalMs: 1000 };

function stagefabric(name: string, key: string, open: () => Promise<TaskStore>, cleanup: () => Promise<void>): System {
  let store: TaskStore;
  let system: StageSystem;
  let registry: TaskRegistry;
  return {
    name,
    key,
    subject: 'stagefabric',
    settings: PIPELINE,
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
        ...PIPELINE,
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
  key: string,
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
    key,
    subject: 'stagefabric',
    settings: { agents: 3, runners: 2, concurrency: CONCURRENCY / 2, maxDemand: 250, minDemand: 125 },
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

/** A peer's installed version, printed beside its figures. */
const peerVersion = (name: string) =>
  (JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
const GRAPHILE_VERSION = peerVersion('graphile-worker');
const PGBOSS_VERSION = peerVersion('pg-boss');

/**
 * graphile-worker at its throughput setting (`best`: a local queue of 500,
 * completions and failures batched, the concurrency and pool its docs
 * benchmark with) or at its defaults for batching (`default`: each job
 * fetched and completed on its own, its lowest-latency setting).
 */
function graphile(mode: 'best' | 'default'): System {
  const schema = `gw_bench_${randomUUID().slice(0, 8)}`;
  const settings =
    mode === 'best'
      ? {
          concurrentJobs: 24,
          maxPoolSize: 25,
          localQueue: { size: 500 },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
          pollInterval: 1000,
        }
      : { concurrentJobs: 24, maxPoolSize: 25, pollInterval: 1000 };
  let utils: Awaited<ReturnType<typeof makeWorkerUtils>>;
  let runner: Awaited<ReturnType<typeof run>> | undefined;
  let onTask: () => void = () => {};
  return {
    name: `graphile-worker ${mode}`,
    key: `graphile_worker_${mode}`,
    subject: `graphile-worker ${GRAPHILE_VERSION}`,
    settings,
    async setup(cb) {
      onTask = cb;
      utils = await makeWorkerUtils({ connectionString: DATABASE_URL, schema });
      await utils.migrate();
    },
    enqueue: async (count) => void (await utils.addJobs(Array.from({ length: count }, () => ({ identifier: 'noop', payload: {} })))),
    async startWorkers() {
      runner = await run({
        noHandleSignals: true,
        taskList: { noop: async () => onTask() },
        preset: { worker: { connectionString: DATABASE_URL, schema, ...settings } },
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

/** pg-boss at its fastest batch setting: batches of 1000 fetched back to back while they come back full, woken by NOTIFY. */
function pgBoss(): System {
  const schema = `pgb_bench_${randomUUID().slice(0, 8)}`;
  const settings = { batchSize: 1000, burstWhenBatchFull: true, queueNotify: true, pollingIntervalSeconds: 0.5 };
  let boss: PgBoss;
  let onTask: () => void = () => {};
  return {
    name: 'pg-boss batch',
    key: 'pg_boss_batch',
    subject: `pg-boss ${PGBOSS_VERSION}`,
    settings,
    async setup(cb) {
      onTask = cb;
      boss = new PgBoss({ connectionString: DATABASE_URL, schema });
      boss.on('error', () => {});
      await boss.start();
      await boss.createQueue('noop', { notify: settings.queueNotify });
    },
    enqueue: async (count) =>
      void (await boss.insert(
        'noop',
        Array.from({ length: count }, () => ({ data: {} })),
      )),
    async startWorkers() {
      await boss.work(
        'noop',
        {
          batchSize: settings.batchSize,
          burstWhenBatchFull: settings.burstWhenBatchFull,
          pollingIntervalSeconds: settings.pollingIntervalSeconds,
        },
        async (jobs) => {
          for (const _ of jobs) onTask();
        },
      );
    },
    async teardown() {
      await boss.stop({ graceful: false });
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

const AGENT = join(ROOT, 'bench/dist/tasks-pg-agent.js');
const KEPT = 1_000_000;

async function withClient<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: DATABASE_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Agent processes of the scaling runs still running: a benchmark that fails leaves none behind. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Agent processes on one store, each a co-located pipeline; `ran` counts the tasks they ran. */
async function startAgents(count: number, schema: string) {
  let ran = 0;
  const agents = await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<ChildProcess>((ready, failed) => {
          const child = spawn(process.execPath, ['--expose-gc', AGENT, DATABASE_URL, schema, `bench-agent-${i}`], {
            stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
          });
          child.on('message', (m: unknown) => {
            if (m === 'ready') ready(child);
            else if (typeof m === 'object' && m !== null && 'ran' in m) ran += (m as { ran: number }).ran;
          });
          child.once('exit', (code) => failed(new Error(`bench agent ${i} exited (${code}) before it was ready`)));
          running.add(child);
          child.once('exit', () => running.delete(child));
        }),
    ),
  );
  const heap = (child: ChildProcess) =>
    new Promise<number>((resolve) => {
      const on = (m: unknown) => {
        if (typeof m === 'object' && m !== null && 'heap' in m) {
          child.off('message', on);
          resolve((m as { heap: number }).heap);
        }
      };
      child.on('message', on);
      child.send('heap');
    });
  return {
    ran: () => ran,
    heaps: () => Promise.all(agents.map(heap)),
    stop: () =>
      Promise.all(
        agents.map(
          (child) =>
            new Promise<void>((done) => {
              child.removeAllListeners('exit');
              child.once('exit', () => {
                running.delete(child);
                done();
              });
              child.send('stop');
            }),
        ),
      ),
  };
}

/**
 * Drains N tasks with `count` agent processes on the schema's store: the
 * tasks are enqueued an hour ahead, then come due at once, so agent start-up
 * and enqueueing are left out. Returns tasks/s and the agents' heaps after.
 */
async function drainWithAgents(count: number, schema: string, store: PostgresTaskStore) {
  const agents = await startAgents(count, schema);
  for (let i = 0; i < N; i += 1000)
    await store.enqueue(Array.from({ length: Math.min(1000, N - i) }, () => ({ name: 'noop', options: { delayMs: 3_600_000 } })));
  const t0 = performance.now();
  await withClient(async (c) => {
    await c.query(`UPDATE ${schema}.tasks SET run_at = now() WHERE state = 'waiting'`);
    await c.query('SELECT pg_notify($1, $2)', [`${schema}_enqueued`, 'default']);
  });
  const deadline = Date.now() + 120_000;
  while (agents.ran() < N) {
    if (Date.now() > deadline) throw new Error(`${count} agents ran ${agents.ran()} of ${N} tasks in 120 s`);
    await new Promise((r) => setTimeout(r, 2));
  }
  const tasksPerS = Math.round(N / ((performance.now() - t0) / 1000));
  const heaps = await agents.heaps();
  await agents.stop();
  return { tasksPerS, heapBytes: Math.max(...heaps) };
}

/** p50 of one claim statement finding the one waiting task, with no agent running. */
async function claimP50(store: PostgresTaskStore): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    await store.enqueue([{ name: 'noop' }]);
    const t0 = performance.now();
    const [task] = await store.claim('default', 1, 'bench-claim', 30_000);
    times.push(performance.now() - t0);
    if (task !== undefined) await store.complete([{ id: task.id, attempt: task.attempt, claimant: task.claimant, status: 'success' }]);
  }
  return Number(quantile(times, 0.5).toFixed(3));
}

/** p50 of counts() (what each /metrics scrape asks), with no agent running. */
async function countsP50(store: PostgresTaskStore): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const t0 = performance.now();
    await store.counts();
    times.push(performance.now() - t0);
  }
  return Number(quantile(times, 0.5).toFixed(3));
}

/** How the PostgreSQL store's cost grows: agents on one database, and a million finished tasks kept. */
async function pgScaling() {
  const point = (chart: string, series: string, x: number, y: number, xLabel: string, yLabel: string) =>
    emitPoint(json, { bench: 'tasks', chart, series, x, y, xLabel, yLabel });
  for (const count of [1, 2, 4]) {
    const schema = `sf_bench_scale_${randomUUID().slice(0, 8)}`;
    const store = new PostgresTaskStore({ url: DATABASE_URL, schema });
    await store.migrate();
    const { tasksPerS } = await drainWithAgents(count, schema, store);
    point('tasks-pg-agents', 'postgres store', count, tasksPerS, 'agent processes', 'tasks/s');
    await store.close();
    await dropSchema(schema);
  }
  const schema = `sf_bench_kept_${randomUUID().slice(0, 8)}`;
  const store = new PostgresTaskStore({ url: DATABASE_URL, schema });
  await store.migrate();
  const size = () =>
    withClient(async (c) => {
      const { rows } = await c.query<{ bytes: string }>(
        `SELECT (pg_total_relation_size('${schema}.tasks') + pg_total_relation_size('${schema}.task_attempts'))::text AS bytes`,
      );
      return Number(rows[0]?.bytes);
    });
  for (const kept of [0, KEPT]) {
    const before = await size();
    if (kept > 0)
      await withClient(async (c) => {
        // Finished tasks as the store leaves them: each a success, recorded on its row.
        await c.query(`INSERT INTO ${schema}.tasks (queue, name, args, state, attempt, success_owner, success_duration_ms, finished_at)
          SELECT 'default', 'noop', 'null', 'success', 1, 'bench-agent-0', 1, now() FROM generate_series(1, ${kept})`);
        await c.query(`VACUUM ANALYZE ${schema}.tasks`);
        // The insert's dirty pages are written now, not by a checkpoint in the middle of the drain measured next.
        await c.query('CHECKPOINT');
      });
    const after = await size();
    const claim = await claimP50(store);
    const counts = await countsP50(store);
    const { tasksPerS, heapBytes } = await drainWithAgents(1, schema, store);
    const x = kept / 1_000_000;
    point('tasks-pg-kept', 'tasks/s', x, tasksPerS, 'finished tasks kept (millions)', 'tasks/s');
    point('tasks-pg-kept-claim', 'claim p50', x, claim, 'finished tasks kept (millions)', 'ms');
    point('tasks-pg-kept-claim', 'counts p50', x, counts, 'finished tasks kept (millions)', 'ms');
    point('tasks-pg-memory', 'agent heap MiB', x, Number((heapBytes / 2 ** 20).toFixed(1)), 'finished tasks kept (millions)', 'MiB');
    point('tasks-pg-memory', 'table MiB', x, Number((after / 2 ** 20).toFixed(1)), 'finished tasks kept (millions)', 'MiB');
    if (kept > 0)
      emitFigure(json, {
        bench: 'tasks',
        figure: 'pg_store_table_bytes_per_million_kept',
        value: Math.round(((after - before) / kept) * 1_000_000),
        unit: 'bytes',
        subject: 'stagefabric',
        settings: { kept, tables: 'tasks + task_attempts, with their indexes' },
      });
  }
  await store.close();
  await dropSchema(schema);
}

const results: Result[] = [];
const sfSchema = `sf_bench_${randomUUID().slice(0, 8)}`;
const sfSplitSchema = `sf_bench_split_${randomUUID().slice(0, 8)}`;
const sfSplitPrefix = `sfbenchsplit${randomUUID().slice(0, 8)}`;
const systems: (() => System)[] = [
  () =>
    stagefabric(
      'stagefabric-postgres',
      'pg_store',
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
      'pg_store_split',
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
      'bullmq_store_split',
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
  () => graphile('best'),
  () => graphile('default'),
  pgBoss,
];
const only = args.indexOf('--only');
for (const make of systems) {
  const system = make();
  // --only names the systems to run, separated by '|' (for looking at a few rows; the whole bench runs them all).
  if (only >= 0 && !(args[only + 1] as string).split('|').includes(system.name)) continue;
  results.push(await measure(system));
}
for (const r of results) {
  const f = (figure: string, value: number, unit: string) =>
    emitFigure(json, { bench: 'tasks', figure: `${r.key}_${figure}`, value, unit, subject: r.subject, settings: r.settings });
  f('tasks_per_s', r.process_per_s, 'tasks/s');
  f('enqueue_per_s', r.enqueue_per_s, 'tasks/s');
  f('start_p50_ms', r.latency_p50_ms, 'ms');
  if (!r.key.endsWith('_split')) f('node_cpu_us_per_task', r.cpu_us_per_task, 'µs');
  f('start_p99_ms', r.latency_p99_ms, 'ms');
}
const byKey = (key: string) => results.find((r) => r.key === key);
const pgStore = byKey('pg_store');
const gwBest = byKey('graphile_worker_best');
const gwDefault = byKey('graphile_worker_default');
if (pgStore !== undefined && gwBest !== undefined)
  emitFigure(json, {
    bench: 'tasks',
    figure: 'pg_store_vs_graphile_worker_best_tasks_per_s',
    value: Number((pgStore.process_per_s / gwBest.process_per_s).toFixed(2)),
    unit: 'ratio',
    subject: 'stagefabric',
    settings: { target: '>= 2' },
  });
if (pgStore !== undefined && gwDefault !== undefined)
  emitFigure(json, {
    bench: 'tasks',
    figure: 'pg_store_vs_graphile_worker_default_start_p50',
    value: Number((pgStore.latency_p50_ms / gwDefault.latency_p50_ms).toFixed(2)),
    unit: 'ratio',
    subject: 'stagefabric',
    settings: { target: '<= 1' },
  });
if (!args.includes('--no-scaling')) await pgScaling();
process.exit(0);
