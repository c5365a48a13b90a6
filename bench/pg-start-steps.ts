/**
 * node bench/dist/pg-start-steps.js [--json] [--samples N]
 *
 * Where an enqueue→start goes on the PostgreSQL store: the producer and
 * runner of an agent in this process, one task at a time into idle runners
 * with 5 ms between tasks (default 300, the first 50 left out), each store
 * call timed as the pipeline makes it. Prints the median time, from the
 * enqueue call, at which each step began and ended, and the median of each
 * call timed alone, back to back and after 5 ms idle, beside graphile-worker's
 * addJob. DATABASE_URL names the server (default a local one).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { StageSystem } from '@stagefabric/runtime';
import { startTaskPipeline, TaskRegistry } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import { makeWorkerUtils } from 'graphile-worker';
import pg from 'pg';
import { emitFigure } from './figures.js';
import { ROOT } from './processes.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const samplesArg = args.indexOf('--samples');
const SAMPLES = samplesArg >= 0 ? Number(args[samplesArg + 1]) : 300;
const WARMUP = 50;
const GRAPHILE_VERSION = (JSON.parse(readFileSync(join(ROOT, 'node_modules/graphile-worker/package.json'), 'utf8')) as { version: string })
  .version;
const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `sf_steps_${process.pid}`;
const store = new PostgresTaskStore({ url: DATABASE_URL, schema });
await store.migrate();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
let t0 = 0;
let marks: [string, number][] = [];
const mark = (what: string) => marks.push([what, performance.now() - t0]);
const timed =
  <A extends unknown[], R>(name: string, call: (...a: A) => Promise<R>) =>
  async (...a: A): Promise<R> => {
    mark(`${name} sent`);
    try {
      return await call(...a);
    } finally {
      mark(`${name} answered`);
    }
  };
store.enqueue = timed('enqueue', store.enqueue.bind(store));
store.claim = timed('claim', store.claim.bind(store));
store.claimLookingAhead = timed('claimLookingAhead', store.claimLookingAhead.bind(store));
store.complete = timed('complete', store.complete.bind(store));
store.nextRunAt = timed('nextRunAt', store.nextRunAt.bind(store));
const onEnqueued = store.onEnqueued.bind(store);
store.onEnqueued = (queue, listener) =>
  onEnqueued(queue, () => {
    mark('enqueue notified');
    listener();
  });

let ran: () => void = () => {};
const system = new StageSystem();
await startTaskPipeline(system, {
  store,
  registry: new TaskRegistry().register('noop', () => {
    mark('handler started');
    ran();
  }),
  owner: 'steps',
  concurrency: 50,
  maxDemand: 500,
  minDemand: 250,
  pollIntervalMs: 1000,
});

const steps = new Map<string, number[]>();
const starts: number[] = [];
for (let i = 0; i < SAMPLES; i++) {
  await new Promise((resolve) => setTimeout(resolve, 5));
  marks = [];
  const started = new Promise<void>((resolve) => {
    ran = resolve;
  });
  t0 = performance.now();
  await store.enqueue([{ name: 'noop' }]);
  await started;
  starts.push(performance.now() - t0);
  if (i < WARMUP) continue;
  // The next task's wait lets this one's completion be answered, so its marks are in this sample.
  await new Promise((resolve) => setTimeout(resolve, 5));
  for (const [what, at] of marks) steps.set(what, [...(steps.get(what) ?? []), at]);
}
await system.shutdown();

// Each call alone, on the same store, with nothing else running: back to back, and each after 5 ms idle (as the
// tasks above arrive). graphile-worker's addJob beside it, on the same server.
const alone = async (name: string, call: () => Promise<unknown>, idleMs: number) => {
  const ms: number[] = [];
  for (let i = 0; i < 200; i++) {
    if (idleMs > 0) await new Promise((resolve) => setTimeout(resolve, idleMs));
    const t = performance.now();
    await call();
    ms.push(performance.now() - t);
  }
  return [idleMs === 0 ? `${name}_alone` : `${name}_after_${idleMs}ms_idle`, median(ms)] as const;
};
const utils = await makeWorkerUtils({ connectionString: DATABASE_URL, schema: `${schema}_gw` });
await utils.migrate();
const aloneTimes = [];
for (const idleMs of [0, 5]) {
  aloneTimes.push(await alone('enqueue', () => store.enqueue([{ name: 'noop' }]), idleMs));
  aloneTimes.push(await alone('claim', () => store.claim('default', 1, 'steps', 30_000), idleMs));
  aloneTimes.push(await alone('graphile_worker_add_job', () => utils.addJob('noop', {}), idleMs));
}
await utils.release();
await store.close();
const client = new pg.Client({ connectionString: DATABASE_URL });
await client.connect();
await client.query(`DROP SCHEMA ${schema} CASCADE`);
await client.query(`DROP SCHEMA ${schema}_gw CASCADE`);
await client.end();

const settings = { samples: SAMPLES - WARMUP, gapMs: 5, concurrency: 50, maxDemand: 500 };
emitFigure(json, {
  bench: 'pg-start-steps',
  figure: 'pg_store_start_p50_ms',
  value: Number(median(starts.slice(WARMUP)).toFixed(2)),
  unit: 'ms',
  subject: 'stagefabric',
  settings,
});
for (const [what, at] of [...steps].sort((a, b) => median(a[1]) - median(b[1])))
  emitFigure(json, {
    bench: 'pg-start-steps',
    figure: `${what.replace(/ /g, '_')}_at_p50_ms`,
    value: Number(median(at).toFixed(2)),
    unit: 'ms',
    subject: 'stagefabric',
    settings: { ...settings, seen: at.length },
  });
for (const [name, ms] of aloneTimes)
  emitFigure(json, {
    bench: 'pg-start-steps',
    figure: `${name}_p50_ms`,
    value: Number(ms.toFixed(2)),
    unit: 'ms',
    subject: name.startsWith('graphile') ? `graphile-worker ${GRAPHILE_VERSION}` : 'stagefabric',
    settings: { calls: 200 },
  });
process.exit(0);
