/**
 * npm run bench:runtime [-- --json] [-- --events N]
 *
 * With --json, one figure line each (bench/figures.ts).
 *
 * producer -> producer_consumer (x + 1) -> consumer over N events (default
 * 20 M) at maxDemand 1000 (batches of 500), 2000 (batches of 1000, as the
 * loop's arrays) and 10, beside a Node objectMode
 * Readable -> Transform -> Writable pipeline and a plain loop over arrays of
 * 1000, all in this one process and run. The pipeline and the loop run in
 * alternating rounds after a warm-up; each keeps its best round.
 */
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline as streamPipeline } from 'node:stream/promises';
import { consumer, producer, producerConsumer, StageSystem } from '@stagefabric/runtime';
import { emitFigure } from './figures.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const eventsArg = args.indexOf('--events');
const TOTAL = eventsArg >= 0 ? Number(args[eventsArg + 1]) : 20_000_000;

async function stages(total: number, maxDemand: number): Promise<{ seconds: number; sum: number }> {
  const system = new StageSystem();
  let sum = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const counter = await system.start(
    producer<number, number, number>({
      init: () => ({ state: 0 }),
      handleDemand(demand, next) {
        const n = Math.min(demand, total - next);
        const events = new Array<number>(n);
        for (let i = 0; i < n; i++) events[i] = next + i;
        return { events, state: next + n };
      },
    }),
    undefined,
  );
  const plusOne = await system.start(
    producerConsumer<null, number, number>({
      init: () => ({ state: null }),
      handleEvents: (events) => ({ events: events.map((x) => x + 1) }),
    }),
    undefined,
  );
  let received = 0;
  const sink = await system.start(
    consumer<null, number>({
      init: () => ({ state: null }),
      handleEvents(events) {
        let batchSum = 0;
        for (let i = 0; i < events.length; i++) batchSum += events[i] as number;
        sum += batchSum;
        received += events.length;
        if (received >= total) done();
      },
    }),
    undefined,
  );
  const start = process.hrtime.bigint();
  await system.subscribe(sink, { to: plusOne, maxDemand });
  await system.subscribe(plusOne, { to: counter, maxDemand });
  await finished;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await system.shutdown();
  return { seconds, sum };
}

async function nodeStreams(total: number): Promise<{ seconds: number; sum: number }> {
  let next = 0;
  let sum = 0;
  const start = process.hrtime.bigint();
  await streamPipeline(
    new Readable({
      objectMode: true,
      read() {
        // push until the stream's highWaterMark says stop
        while (next < total) if (!this.push(next++)) return;
        this.push(null);
      },
    }),
    new Transform({ objectMode: true, transform: (x: number, _e, cb) => cb(null, x + 1) }),
    new Writable({
      objectMode: true,
      write(x: number, _e, cb) {
        sum += x;
        cb();
      },
    }),
  );
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, sum };
}

function arrayLoop(total: number): { seconds: number; sum: number } {
  const start = process.hrtime.bigint();
  let sum = 0;
  for (let next = 0; next < total; next += 1000) {
    const n = Math.min(1000, total - next);
    const batch = new Array<number>(n);
    for (let i = 0; i < n; i++) batch[i] = next + i;
    const mapped = batch.map((x) => x + 1);
    let batchSum = 0;
    for (let i = 0; i < mapped.length; i++) batchSum += mapped[i] as number;
    sum += batchSum;
  }
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, sum };
}

const expected = (TOTAL * (TOTAL + 1)) / 2;
const check = (what: string, sum: number) => {
  if (sum !== expected) throw new Error(`${what}: sum ${sum}, expected ${expected}`);
};

// Warm up every path so the JIT has compiled them and the young generation
// has grown to its working size, then measure the pipeline and the loop in
// alternating rounds and keep each one's best: neither profits from running
// after the other.
const WARMUP = Math.min(TOTAL, 2_000_000);
await stages(WARMUP, 1000);
await nodeStreams(Math.floor(WARMUP / 10));
arrayLoop(WARMUP);

const ROUNDS = 3;
let big = { seconds: Number.POSITIVE_INFINITY, sum: 0 };
/** maxDemand 2000, minDemand 1000: batches of 1000, the loop's array length. */
let sameBatches = { seconds: Number.POSITIVE_INFINITY, sum: 0 };
let loop = { seconds: Number.POSITIVE_INFINITY, sum: 0 };
let heapGrowth = 0;
for (let round = 0; round < ROUNDS; round++) {
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const run = await stages(TOTAL, 1000);
  global.gc?.();
  heapGrowth = Math.max(heapGrowth, process.memoryUsage().heapUsed - heapBefore);
  check('stages maxDemand 1000', run.sum);
  if (run.seconds < big.seconds) big = run;
  const same = await stages(TOTAL, 2000);
  check('stages maxDemand 2000', same.sum);
  if (same.seconds < sameBatches.seconds) sameBatches = same;
  const l = arrayLoop(TOTAL);
  check('array loop', l.sum);
  if (l.seconds < loop.seconds) loop = l;
}
const smallTotal = Math.floor(TOTAL / 10);
const small = await stages(smallTotal, 10);
if (small.sum !== (smallTotal * (smallTotal + 1)) / 2) throw new Error('stages maxDemand 10: wrong sum');
const streams = await nodeStreams(TOTAL);
check('node streams', streams.sum);

const settings = { events: TOTAL, maxDemand: 1000, best_of_rounds: ROUNDS };
const fig = (figure: string, value: number, unit: string, subject: string, extra: Record<string, unknown> = settings) =>
  emitFigure(json, { bench: 'runtime', figure, value, unit, subject, settings: extra });
fig('pipeline_events_per_s', Math.round(TOTAL / big.seconds), 'events/s', 'stagefabric');
fig('pipeline_loop_batching_events_per_s', Math.round(TOTAL / sameBatches.seconds), 'events/s', 'stagefabric', {
  ...settings,
  maxDemand: 2000,
  batch: 1000,
});
fig('pipeline_loop_batching_vs_loop_ratio', Number((TOTAL / sameBatches.seconds / (TOTAL / loop.seconds)).toFixed(2)), 'x', 'stagefabric', {
  what: 'the pipeline against the loop at the loop batching (arrays of 1000 each)',
});
fig('pipeline_max_demand_10_events_per_s', Math.round(smallTotal / small.seconds), 'events/s', 'stagefabric', {
  events: smallTotal,
  maxDemand: 10,
});
fig('node_streams_events_per_s', Math.round(TOTAL / streams.seconds), 'events/s', `node ${process.versions.node} objectMode streams`, {
  events: TOTAL,
  highWaterMark: 16,
});
fig('array_loop_events_per_s', Math.round(TOTAL / loop.seconds), 'events/s', 'plain loop', {
  events: TOTAL,
  arrayLength: 1000,
  best_of_rounds: ROUNDS,
});
fig('pipeline_heap_growth_bytes', heapGrowth, 'bytes', 'stagefabric');
