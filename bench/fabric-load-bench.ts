/**
 * node bench/dist/fabric-load-bench.js [--json] [--scaling-events N] [--memory-events N] [--delay-ms N]
 *
 * How the fabric's cost grows with load, over a redis-server of the
 * benchmark's own:
 * - scaling: one producer agent and 1, 2 and 4 consumer agents (one sink
 *   each, maxDemand 1000, the demand dispatcher sharing events among them),
 *   N events (default 1 M) each time: events/s from the first event any sink
 *   received to the last, as chart points (chart `fabric-scaling`);
 * - memory: N events (default 500 000) through one consumer that takes
 *   `delay-ms` (default 5) per batch of 500, so the producer outruns it:
 *   heap of both agents and Redis used_memory, sampled every 250 ms; growth
 *   per million events (heap: lowest reading of the last third of the run
 *   against the lowest of the first, so garbage not yet collected does not
 *   count) and peaks, as figures, and the samples as chart points.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { emitFigure, emitPoint } from './figures.js';
import { type BenchRedis, type Child, freePort, pollUntil, ROOT, startAgent, startRedis, writeTopology } from './processes.js';

const { values } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    'scaling-events': { type: 'string', default: '1000000' },
    'memory-events': { type: 'string', default: '500000' },
    'delay-ms': { type: 'string', default: '5' },
  },
});
const json = values.json;
const SCALING_EVENTS = Number(values['scaling-events']);
const MEMORY_EVENTS = Number(values['memory-events']);
const DELAY_MS = Number(values['delay-ms']);
const STAGES = join(ROOT, 'bench/fabric-load-stages.mjs');
const CONSUMER_COUNTS = [1, 2, 4];
const MAX_DEMAND = 1000;

async function counts(redis: BenchRedis, key: string) {
  const [count, first, last] = await redis.admin.mget(`${key}:count`, `${key}:first`, `${key}:last`);
  return { count: Number(count ?? 0), first: Number(first ?? 0), last: Number(last ?? 0) };
}

async function stopAll(agents: Child[]): Promise<void> {
  for (const a of agents) a.child.kill('SIGTERM');
  await Promise.all(agents.map((a) => a.output));
}

/** One producer agent, `consumers` consumer agents; returns events/s from the first arrival to the last. */
async function scaling(redis: BenchRedis, consumers: number, total: number): Promise<number> {
  const nodes = Array.from({ length: consumers }, (_, i) => `c${i + 1}`);
  const key = `bench:scaling:${consumers}`;
  const topology = writeTopology(
    redis.dir,
    `scaling-${consumers}`,
    `stages:
  source: { module: ${STAGES}, args: { limit: ${total} }, nodes: [p] }
  sink: { module: ${STAGES}, args: { key: "${key}" }, nodes: [${nodes.join(', ')}], subscribe: [{ to: source, maxDemand: ${MAX_DEMAND} }] }
`,
  );
  const env = { REDIS_URL: redis.url, STAGEFABRIC_NAMESPACE: `scaling${consumers}` };
  const agents = nodes.map((n) => startAgent(topology, n, env));
  agents.push(startAgent(topology, 'p', env));
  try {
    await pollUntil(async () => (await counts(redis, key)).count >= total, `${total} events at ${consumers} consumers`, 300_000, 50);
  } finally {
    await stopAll(agents);
  }
  const { count, first, last } = await counts(redis, key);
  return Math.round(count / ((last - first) / 1000));
}

async function heapOf(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(/^stagefabric_nodejs_heap_size_used_bytes(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? Number.NaN);
}

async function slowConsumer(redis: BenchRedis, total: number) {
  const key = 'bench:memory';
  const topology = writeTopology(
    redis.dir,
    'memory',
    `stages:
  source: { module: ${STAGES}, args: { limit: ${total} }, nodes: [p] }
  sink: { module: ${STAGES}, args: { key: "${key}", delayMs: ${DELAY_MS} }, nodes: [c], subscribe: [{ to: source, maxDemand: ${MAX_DEMAND} }] }
`,
  );
  const env = { REDIS_URL: redis.url, STAGEFABRIC_NAMESPACE: 'memory' };
  const [producerPort, consumerPort] = [await freePort(), await freePort()];
  const agents = [
    startAgent(topology, 'c', env, ['--metrics-port', String(consumerPort)]),
    startAgent(topology, 'p', env, ['--metrics-port', String(producerPort)]),
  ];
  const samples: { producer: number; consumer: number; redis: number; count: number }[] = [];
  try {
    await pollUntil(async () => (await counts(redis, key)).count > 0, 'the first events at the slow consumer', 60_000);
    await pollUntil(
      async () => {
        const [producer, consumer, memory, { count }] = await Promise.all([
          heapOf(producerPort),
          heapOf(consumerPort),
          redis.usedMemory(),
          counts(redis, key),
        ]);
        samples.push({ producer, consumer, redis: memory, count });
        return count >= total;
      },
      `${total} events through the slow consumer`,
      600_000,
      250,
    );
  } finally {
    await stopAll(agents);
  }
  return samples;
}

const redis = await startRedis();
try {
  for (const consumers of CONSUMER_COUNTS) {
    const rate = await scaling(redis, consumers, SCALING_EVENTS);
    const settings = { events: SCALING_EVENTS, producers: 1, consumers, maxDemand: MAX_DEMAND, dispatcher: 'demand' };
    emitFigure(json, {
      bench: 'fabric-load',
      figure: `fabric_${consumers}_consumers_events_per_s`,
      value: rate,
      unit: 'events/s',
      subject: 'stagefabric',
      settings,
    });
    emitPoint(json, {
      bench: 'fabric-load',
      chart: 'fabric-scaling',
      series: 'one producer agent → N consumer agents',
      x: consumers,
      y: rate,
      xLabel: 'consumer agents',
      yLabel: 'events/s',
    });
  }

  const samples = await slowConsumer(redis, MEMORY_EVENTS);
  const first = samples[0];
  const last = samples.at(-1);
  if (first === undefined || last === undefined) throw new Error('bench: no memory samples');
  const events = last.count - first.count;
  const perMillion = (bytes: number) => Math.round((bytes / events) * 1e6);
  const settings = { events: MEMORY_EVENTS, delayMsPerBatch: DELAY_MS, maxDemand: MAX_DEMAND, samples: samples.length, sampleEveryMs: 250 };
  const fig = (figure: string, value: number, unit: string) =>
    emitFigure(json, { bench: 'fabric-load', figure, value, unit, subject: 'stagefabric', settings });
  const peak = (pick: (s: (typeof samples)[number]) => number) => Math.max(...samples.map(pick));
  // Heap read between collections carries garbage; what the process keeps shows in the troughs:
  // growth is the lowest reading of the last third of the run minus the lowest of the first third.
  const third = Math.max(1, Math.floor(samples.length / 3));
  const troughGrowth = (pick: (s: (typeof samples)[number]) => number) =>
    Math.min(...samples.slice(-third).map(pick)) - Math.min(...samples.slice(0, third).map(pick));
  fig('slow_consumer_events_per_s', Math.round(events / ((samples.length - 1) * 0.25)), 'events/s');
  fig('slow_consumer_producer_heap_growth_per_million_events_bytes', perMillion(troughGrowth((s) => s.producer)), 'bytes');
  fig('slow_consumer_consumer_heap_growth_per_million_events_bytes', perMillion(troughGrowth((s) => s.consumer)), 'bytes');
  fig('slow_consumer_redis_memory_growth_per_million_events_bytes', perMillion(last.redis - first.redis), 'bytes');
  fig(
    'slow_consumer_producer_heap_peak_bytes',
    peak((s) => s.producer),
    'bytes',
  );
  fig(
    'slow_consumer_consumer_heap_peak_bytes',
    peak((s) => s.consumer),
    'bytes',
  );
  fig('slow_consumer_redis_memory_peak_above_start_bytes', peak((s) => s.redis) - first.redis, 'bytes');
  for (const s of samples) {
    emitPoint(json, {
      bench: 'fabric-load',
      chart: 'fabric-slow-consumer-memory',
      series: 'producer agent heap',
      x: s.count,
      y: s.producer,
      xLabel: 'events through the slow consumer',
      yLabel: 'bytes',
    });
    emitPoint(json, {
      bench: 'fabric-load',
      chart: 'fabric-slow-consumer-memory',
      series: 'consumer agent heap',
      x: s.count,
      y: s.consumer,
      xLabel: 'events through the slow consumer',
      yLabel: 'bytes',
    });
    emitPoint(json, {
      bench: 'fabric-load',
      chart: 'fabric-slow-consumer-memory',
      series: 'redis used_memory',
      x: s.count,
      y: s.redis,
      xLabel: 'events through the slow consumer',
      yLabel: 'bytes',
    });
  }
} finally {
  await redis.stop();
}
