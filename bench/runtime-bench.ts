/**
 * npm run bench:runtime [-- --json] [-- --events N]
 *
 * producer -> producer_consumer (x + 1) -> consumer over N events (default
 * 20 M) at maxDemand 1000 and 10, beside a Node objectMode
 * Readable -> Transform -> Writable pipeline and a plain loop over arrays of
 * 1000, all in this one process and run.
 */
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline as streamPipeline } from 'node:stream/promises';
import { consumer, producer, producerConsumer, StageSystem } from '@stagefabric/runtime';

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

// Warm up every path once so the JIT has seen them before timing.
await stages(200_000, 1000);
await nodeStreams(200_000);
arrayLoop(200_000);

global.gc?.();
const heapBefore = process.memoryUsage().heapUsed;
const big = await stages(TOTAL, 1000);
global.gc?.();
const heapAfter = process.memoryUsage().heapUsed;
check('stages maxDemand 1000', big.sum);
const smallTotal = Math.floor(TOTAL / 10);
const small = await stages(smallTotal, 10);
if (small.sum !== (smallTotal * (smallTotal + 1)) / 2) throw new Error('stages maxDemand 10: wrong sum');
const streams = await nodeStreams(TOTAL);
check('node streams', streams.sum);
const loop = arrayLoop(TOTAL);
check('array loop', loop.sum);

const result = {
  events_per_s: Math.round(TOTAL / big.seconds),
  events_per_s_max_demand_10: Math.round(smallTotal / small.seconds),
  node_streams_events_per_s: Math.round(TOTAL / streams.seconds),
  array_loop_events_per_s: Math.round(TOTAL / loop.seconds),
  heap_growth_bytes: heapAfter - heapBefore,
};
if (json) {
  console.log(JSON.stringify(result));
} else {
  const m = (n: number) => `${(n / 1e6).toFixed(1)} M/s`;
  console.log(`events: ${TOTAL.toLocaleString('en')} (maxDemand 10 run: ${smallTotal.toLocaleString('en')})`);
  console.log(`stagefabric maxDemand 1000   ${m(result.events_per_s)}`);
  console.log(`stagefabric maxDemand 10     ${m(result.events_per_s_max_demand_10)}`);
  console.log(
    `node objectMode streams      ${m(result.node_streams_events_per_s)}  (stagefabric is ${(result.events_per_s / result.node_streams_events_per_s).toFixed(1)}x)`,
  );
  console.log(
    `plain loop, arrays of 1000   ${m(result.array_loop_events_per_s)}  (stagefabric is ${(result.events_per_s / result.array_loop_events_per_s).toFixed(2)} of it)`,
  );
  console.log(`heap growth over the 1000 run ${(result.heap_growth_bytes / 1024).toFixed(0)} KiB`);
}
