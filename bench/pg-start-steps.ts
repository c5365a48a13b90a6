/**
 * node bench/dist/pg-start-steps.js [--json] [--samples N]
 *
 * Where an enqueue→start goes on the PostgreSQL store: the producer and
 * runner of an agent in this process, one task at a time into idle runners
 * with 5 ms between tasks (default 300, the first 50 left out), each store
 * call timed as the pipeline makes it. Prints the median time, from the
 * enqueue call, at which each step began and ended, and the median of each
 * call timed alone. DATABASE_URL names the server (default a local one).
 */
import { StageSystem } from '@stagefabric/runtime';
import { startTaskPipeline, TaskRegistry } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { emitFigure } from './figures.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const samplesArg = args.indexOf('--samples');
const SAMPLES = samplesArg >= 0 ? Number(args[samplesArg + 1]) : 300;
const WARMUP = 50;
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

// Each call alone, on the same store, with nothing else running.
const alone = async (name: string, call: () => Promise<unknown>) => {
  const ms: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t = performance.now();
    await call();
    ms.push(performance.now() - t);
  }
  return [name, median(ms)] as const;
};
const aloneTimes = [
  await alone('enqueue', () => store.enqueue([{ name: 'noop' }])),
  await alone('claim', () => store.claim('default', 1, 'steps', 30_000)),
];
await store.close();
const client = new pg.Client({ connectionString: DATABASE_URL });
await client.connect();
await client.query(`DROP SCHEMA ${schema} CASCADE`);
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
    figure: `${name}_alone_p50_ms`,
    value: Number(ms.toFixed(2)),
    unit: 'ms',
    subject: 'stagefabric',
    settings: { calls: 200 },
  });
process.exit(0);
