/**
 * npm run bench:bullmq [-- --json] [-- --tasks N] [-- --runs R]
 *
 * Stagefabric's Redis (BullMQ) task store against a bare BullMQ Worker, in
 * the same run against the same Redis: N no-op tasks (default 20 000)
 * enqueued in bulk of 1000, then drained with 50 running at once, each side
 * R times (default 5) in turn, the median run kept. The store runs as an agent
 * runs it: the task producer claims by demand (maxDemand 500), the runner
 * runs 50 at once and records each outcome with its attempt history. The
 * peer is BullMQ's own processing loop at concurrency 50, keeping its
 * completed jobs as the store does (and, as a second row, removing them).
 * Prints each figure and the store/Worker ratio (target >= 1). A third
 * side runs the same producer and runner on a store that costs nothing
 * (tasks made up in memory, outcomes taken at once): the pipeline's own
 * ceiling on this machine, so the store/free ratio says what the store costs.
 * Each side's Node CPU per task over the drain is printed too: on a shared
 * machine it moves less from run to run than tasks/s. So are Redis's main
 * thread CPU per task and the share of the drain each process was busy
 * (near 1: that process bounds the drain; both well under: round trips do).
 * REDIS_URL names the server (default a local one).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { StageSystem } from '@stagefabric/runtime';
import { type ClaimedTask, startTaskPipeline, TaskRegistry, type TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { emitFigure } from './figures.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const option = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const N = option('--tasks', 20_000);
const RUNS = option('--runs', 5);
/** `--only store|worker|workerRemoving`: one side alone, for profiling (no ratios). */
const onlyArg = args.indexOf('--only');
const only = onlyArg >= 0 ? args[onlyArg + 1] : undefined;
const CONCURRENCY = 50;
const BATCH = 1000;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ROOT = resolve(import.meta.dirname, '../..');
const BULLMQ_VERSION = (JSON.parse(readFileSync(join(ROOT, 'node_modules/bullmq/package.json'), 'utf8')) as { version: string }).version;

interface Side {
  /** Adds `count` no-op tasks in one bulk call. */
  enqueue(count: number): Promise<void>;
  /** Starts draining; `onTask` runs once per task handled. */
  start(onTask: () => void): Promise<void>;
  stop(): Promise<void>;
}

interface Measured {
  enqueuePerS: number;
  processPerS: number;
  /** This process's CPU during the drain, per task (Redis's own is not in it). */
  cpuUsPerTask: number;
  /** Redis's main thread CPU during the drain, per task. */
  redisCpuUsPerTask: number;
  /** Of the drain's wall time, the share Redis's main thread was busy: near 1, Redis bounds the drain. */
  redisBusyShare: number;
  /** Of the drain's wall time, the share this process was on a CPU. */
  nodeBusyShare: number;
}

/** Redis's main thread CPU time so far, in µs (INFO cpu). */
async function redisCpuUs(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const field = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return (field('used_cpu_user_main_thread') + field('used_cpu_sys_main_thread')) * 1e6;
}

async function measure(side: Side): Promise<Measured> {
  const redis = new Redis(REDIS_URL);
  const t0 = performance.now();
  for (let i = 0; i < N; i += BATCH) await side.enqueue(Math.min(BATCH, N - i));
  const enqueueS = (performance.now() - t0) / 1000;
  let handled = 0;
  let t1 = 0;
  let cpu0 = process.cpuUsage();
  const redis0 = await redisCpuUs(redis);
  await new Promise<void>((done, fail) => {
    t1 = performance.now();
    cpu0 = process.cpuUsage();
    side
      .start(() => {
        if (++handled === N) done();
      })
      .catch(fail);
  });
  const processS = (performance.now() - t1) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const redisUs = (await redisCpuUs(redis)) - redis0;
  await redis.quit();
  await side.stop();
  const nodeUs = cpu.user + cpu.system;
  return {
    enqueuePerS: Math.round(N / enqueueS),
    processPerS: Math.round(N / processS),
    cpuUsPerTask: Number((nodeUs / N).toFixed(1)),
    redisCpuUsPerTask: Number((redisUs / N).toFixed(1)),
    redisBusyShare: Number((redisUs / (processS * 1e6)).toFixed(2)),
    nodeBusyShare: Number((nodeUs / (processS * 1e6)).toFixed(2)),
  };
}

async function dropKeys(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
  await redis.quit();
}

/** Producer and runner in this process, as an agent runs them: 50 running, up to 500 claimed ahead. */
async function startPipeline(store: TaskStore, onTask: () => void): Promise<StageSystem> {
  const system = new StageSystem();
  await startTaskPipeline(system, {
    store,
    registry: new TaskRegistry().register('noop', onTask),
    owner: 'bench',
    pollIntervalMs: 1000,
    concurrency: CONCURRENCY,
    maxDemand: 500,
    minDemand: 250,
  });
  return system;
}

/** The store's claims and completions during drains: each call's round trip (ms) and how many tasks it carried. */
const storeCalls = { claim: [] as [number, number][], complete: [] as [number, number][] };

/** The store as an agent runs it: producer and runner in this process, 50 running, up to 500 claimed ahead. */
function store(prefix: string): Side {
  const s = new BullMQTaskStore({ url: REDIS_URL, prefix });
  const claim = s.claim.bind(s);
  s.claim = async (...a) => {
    const t = performance.now();
    const got = await claim(...a);
    storeCalls.claim.push([performance.now() - t, got.length]);
    return got;
  };
  const complete = s.complete.bind(s);
  s.complete = async (outcomes) => {
    const t = performance.now();
    const done = await complete(outcomes);
    storeCalls.complete.push([performance.now() - t, outcomes.length]);
    return done;
  };
  let system: StageSystem | undefined;
  return {
    enqueue: async (count) => void (await s.enqueue(Array.from({ length: count }, () => ({ name: 'noop' })))),
    async start(onTask) {
      system = await startPipeline(s, onTask);
    },
    async stop() {
      await system?.shutdown();
      await s.close();
    },
  };
}

/**
 * The same pipeline on a store that costs nothing: claims make tasks up in
 * memory, every outcome is taken at once. Only what the pipeline calls is
 * there; anything else it called would throw.
 */
function freeStore(): Side {
  let queued = 0;
  let made = 0;
  let system: StageSystem | undefined;
  const store: Partial<TaskStore> = {
    async claim(queue, limit, owner, leaseMs) {
      const out: ClaimedTask[] = [];
      for (; out.length < limit && made < queued; made++) {
        out.push({
          id: `${queue}/${made}`,
          queue,
          name: 'noop',
          args: null,
          attempt: 1,
          claimant: `${owner}:free`,
          maxAttempts: 5,
          timeoutMs: 30_000,
          enqueuedAt: new Date(),
          leaseExpiresAt: new Date(Date.now() + leaseMs),
        });
      }
      return out;
    },
    complete: async (outcomes) => outcomes.map((o) => o.id),
    extendLeases: async (claims) => claims.map((c) => c.id),
    adopt: async (claims) => [...claims],
    release: async () => [],
    releaseHeld: async () => [],
    recoverExpired: async () => 0,
    nextRunAt: async () => null,
    onEnqueued: async () => async () => {},
    get: async () => null,
  };
  return {
    async enqueue(count) {
      queued += count;
    },
    async start(onTask) {
      system = await startPipeline(store as TaskStore, onTask);
    },
    async stop() {
      // Its shutdown has been seen to wait on nothing at all (the process then exits 13 with the drain done):
      // bounded here so the benchmark goes on, and said.
      let timer: NodeJS.Timeout | undefined;
      const stopped = await Promise.race([
        system?.shutdown().then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), 5000);
        }),
      ]);
      clearTimeout(timer);
      if (!stopped) console.error('bullmq-bench: the pipeline on the free store did not shut down within 5 s');
    },
  };
}

/** BullMQ's own Worker loop at the same concurrency. */
function worker(prefix: string, removeOnComplete: boolean): Side {
  const { hostname, port } = new URL(REDIS_URL);
  const connection = { host: hostname, port: Number(port || 6379), maxRetriesPerRequest: null };
  const queue = new Queue('default', { connection, prefix });
  let w: Worker | undefined;
  return {
    enqueue: async (count) =>
      void (await queue.addBulk(Array.from({ length: count }, () => ({ name: 'noop', data: {}, opts: { removeOnComplete } })))),
    async start(onTask) {
      w = new Worker('default', async () => onTask(), { connection, prefix, concurrency: CONCURRENCY });
    },
    async stop() {
      await w?.close();
      await queue.close();
    },
  };
}

const sides = {
  store: (p: string) => store(p),
  worker: (p: string) => worker(p, false),
  workerRemoving: (p: string) => worker(p, true),
  freeStore: (_p: string) => freeStore(),
};
const runs: Record<keyof typeof sides, Measured[]> = { store: [], worker: [], workerRemoving: [], freeStore: [] };
// In turn, so a slow moment of the machine falls on every side alike.
for (let run = 0; run < RUNS; run++) {
  for (const name of Object.keys(sides) as (keyof typeof sides)[]) {
    if (only !== undefined && only !== name) continue;
    const prefix = `sfbenchbq${randomUUID().slice(0, 8)}`;
    runs[name].push(await measure(sides[name](prefix)));
    await dropKeys(prefix);
  }
}
/** The median run of each side: one lucky or starved moment of a shared machine moves no figure. */
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? 0;
const best = Object.fromEntries(
  Object.entries(runs).map(([name, ms]) => [
    name,
    {
      enqueuePerS: median(ms.map((m) => m.enqueuePerS)),
      processPerS: median(ms.map((m) => m.processPerS)),
      cpuUsPerTask: median(ms.map((m) => m.cpuUsPerTask)),
      redisCpuUsPerTask: median(ms.map((m) => m.redisCpuUsPerTask)),
      redisBusyShare: median(ms.map((m) => m.redisBusyShare)),
      nodeBusyShare: median(ms.map((m) => m.nodeBusyShare)),
    },
  ]),
) as Record<keyof typeof sides, Measured>;

if (only !== undefined) {
  console.log(JSON.stringify({ only, ...best[only as keyof typeof sides] }));
  process.exit(0);
}
const peer = `bullmq ${BULLMQ_VERSION}`;
const storeSettings = { concurrency: CONCURRENCY, maxDemand: 500, minDemand: 250, tasks: N, runs: RUNS, keepsCompleted: true };
const workerSettings = { concurrency: CONCURRENCY, tasks: N, runs: RUNS, removeOnComplete: false };
const removingSettings = { ...workerSettings, removeOnComplete: true };
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_store_tasks_per_s',
  value: best.store.processPerS,
  unit: 'tasks/s',
  subject: 'stagefabric',
  settings: storeSettings,
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_worker_tasks_per_s',
  value: best.worker.processPerS,
  unit: 'tasks/s',
  subject: peer,
  settings: workerSettings,
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_worker_removing_tasks_per_s',
  value: best.workerRemoving.processPerS,
  unit: 'tasks/s',
  subject: peer,
  settings: removingSettings,
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_store_vs_worker_ratio',
  value: Number((best.store.processPerS / best.worker.processPerS).toFixed(2)),
  unit: 'x',
  subject: 'stagefabric',
  settings: { target: '>= 1', peer, ...workerSettings },
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_store_vs_worker_removing_ratio',
  value: Number((best.store.processPerS / best.workerRemoving.processPerS).toFixed(2)),
  unit: 'x',
  subject: 'stagefabric',
  settings: { peer, ...removingSettings },
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'tasks_pipeline_free_store_tasks_per_s',
  value: best.freeStore.processPerS,
  unit: 'tasks/s',
  subject: 'stagefabric',
  settings: { ...storeSettings, store: 'none (in memory, free)' },
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_store_vs_free_store_ratio',
  value: Number((best.store.processPerS / best.freeStore.processPerS).toFixed(2)),
  unit: 'x',
  subject: 'stagefabric',
  settings: { what: 'the share of the pipeline ceiling the BullMQ store keeps' },
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'tasks_pipeline_free_store_vs_worker_ratio',
  value: Number((best.freeStore.processPerS / best.worker.processPerS).toFixed(2)),
  unit: 'x',
  subject: 'stagefabric',
  settings: { what: 'the highest store/Worker ratio the pipeline allows on this machine', peer, ...workerSettings },
});
// Node CPU per task during the drain: what each side's own process spends, Redis's work left out.
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_store_node_cpu_us_per_task',
  value: best.store.cpuUsPerTask,
  unit: 'µs',
  subject: 'stagefabric',
  settings: storeSettings,
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_worker_node_cpu_us_per_task',
  value: best.worker.cpuUsPerTask,
  unit: 'µs',
  subject: peer,
  settings: workerSettings,
});
// The store's round trips: a claim or a batch of outcomes is one script, which Redis runs alone.
for (const [call, list] of Object.entries(storeCalls)) {
  const settings = { ...storeSettings, calls: list.length };
  emitFigure(json, {
    bench: 'bullmq',
    figure: `bullmq_store_${call}_p50_ms`,
    value: Number(median(list.map(([ms]) => ms)).toFixed(2)),
    unit: 'ms',
    subject: 'stagefabric',
    settings,
  });
  emitFigure(json, {
    bench: 'bullmq',
    figure: `bullmq_store_${call}_tasks_p50`,
    value: median(list.map(([, n]) => n)),
    unit: 'tasks',
    subject: 'stagefabric',
    settings,
  });
}
// Redis's side of the drain, and how busy each process was: which of the two bounds each side.
for (const [key, m, subject, settings] of [
  ['bullmq_store', best.store, 'stagefabric', storeSettings],
  ['bullmq_worker', best.worker, peer, workerSettings],
] as const) {
  emitFigure(json, { bench: 'bullmq', figure: `${key}_redis_cpu_us_per_task`, value: m.redisCpuUsPerTask, unit: 'µs', subject, settings });
  emitFigure(json, { bench: 'bullmq', figure: `${key}_redis_busy_share`, value: m.redisBusyShare, unit: 'x', subject, settings });
  emitFigure(json, { bench: 'bullmq', figure: `${key}_node_busy_share`, value: m.nodeBusyShare, unit: 'x', subject, settings });
}
emitFigure(json, {
  bench: 'bullmq',
  figure: 'tasks_pipeline_free_store_node_cpu_us_per_task',
  value: best.freeStore.cpuUsPerTask,
  unit: 'µs',
  subject: 'stagefabric',
  settings: { ...storeSettings, store: 'none (in memory, free)' },
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_store_enqueue_per_s',
  value: best.store.enqueuePerS,
  unit: 'tasks/s',
  subject: 'stagefabric',
  settings: { batch: BATCH },
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_queue_addbulk_per_s',
  value: best.worker.enqueuePerS,
  unit: 'tasks/s',
  subject: peer,
  settings: { batch: BATCH },
});
emitFigure(json, {
  bench: 'bullmq',
  figure: 'bullmq_store_vs_addbulk_enqueue_ratio',
  value: Number((best.store.enqueuePerS / best.worker.enqueuePerS).toFixed(2)),
  unit: 'x',
  subject: 'stagefabric',
  settings: { peer, batch: BATCH },
});
process.exit(0);
