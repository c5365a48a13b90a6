/**
 * npm run bench:transport [-- --json] [-- --events N] [-- --pings N] [-- --warmup-pings N]
 *
 * A producer agent and a consumer agent as two processes over a Redis of the
 * benchmark's own, at maxDemand 1000, beside a bare ioredis baseline (one
 * process XADDs batches of 500 events per entry, as the fabric's asks do, another reads them with
 * XREADGROUP COUNT and XACKs); then one-event round trips through the fabric
 * (maxDemand 1: every event waits for its ask) and through a bare stream pair,
 * each timed after 1000 unmeasured pings of its own.
 * The throughput pair runs again at ten times the batching (maxDemand 10 000,
 * entries of 5000 events on both sides).
 */
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { emitFigure } from './figures.js';
import { type BenchRedis, p50, ROOT, runNode as run, startAgent, startRedis, writeTopology } from './processes.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const eventsArg = args.indexOf('--events');
const TOTAL = eventsArg >= 0 ? Number(args[eventsArg + 1]) : 2_000_000;
const pingsArg = args.indexOf('--pings');
/** Round trips measured, each way; the agents and the echo start fresh, so the first few hundred run before the JIT has compiled their path. */
const PINGS = pingsArg >= 0 ? Number(args[pingsArg + 1]) : 300;
const warmupArg = args.indexOf('--warmup-pings');
/** Pings each side sends first, unmeasured, so both are timed with their code compiled (fresh processes run it cold). */
const WARMUP = warmupArg >= 0 ? Number(args[warmupArg + 1]) : 1000;
/** Events per stream entry, for both: the fabric's consumer asks again every maxDemand − minDemand (1000 − 500) events. */
const BATCH = 500;
const LARGE = 5000;
const STAGES = join(ROOT, 'bench/transport-stages.mjs');
const PEER = join(ROOT, 'bench/raw-redis-peer.mjs');

/** Runs a producer agent and a consumer agent; returns the sink's report. */
async function fabricRun(url: string, dir: string, tag: string, limit: number, subscribe: string, gaps: boolean) {
  const topology = writeTopology(
    dir,
    `topology-${tag}`,
    `stages:
  source: { module: ${STAGES}, args: { limit: ${limit} }, nodes: [a] }
  sink: { module: ${STAGES}, args: { limit: ${limit}, gaps: ${gaps} }, nodes: [b], restart: transient, subscribe: [{ to: source, ${subscribe} }] }
`,
  );
  const env = { REDIS_URL: url, STAGEFABRIC_NAMESPACE: `bench${tag}` };
  const consumer = startAgent(topology, 'b', env);
  const producer = startAgent(topology, 'a', env);
  const line = (await consumer.output).trim().split('\n').at(-1) as string;
  producer.child.kill('SIGTERM');
  await producer.output;
  return JSON.parse(line) as { count: number; ms: number; times: number[] };
}

async function rawRun(url: string, stream: string, total: number, batch: number) {
  const consumer = run([PEER, 'consume', url, stream, String(total)]);
  await new Promise((r) => setTimeout(r, 200));
  const producer = run([PEER, 'produce', url, stream, String(total), String(batch)]);
  await producer.output;
  return JSON.parse((await consumer.output).trim()) as { count: number; ms: number };
}

async function rawPing(url: string): Promise<number[]> {
  const echo = run([PEER, 'echo', url, 'raw:ping', '0']);
  const redis = new Redis(url);
  const reader = new Redis(url);
  await new Promise((r) => setTimeout(r, 300));
  const rtts: number[] = [];
  let last = '$';
  for (let i = 0; i < WARMUP + PINGS; i++) {
    const start = performance.now();
    await redis.xadd('raw:ping:in', '*', 'm', String(i));
    const reply = await reader.xread('BLOCK', 1000, 'STREAMS', 'raw:ping:out', last);
    last = reply?.[0]?.[1]?.at(-1)?.[0] ?? last;
    if (i >= WARMUP) rtts.push(performance.now() - start);
  }
  await redis.xadd('raw:ping:in', '*', 'm', 'stop');
  await echo.output;
  await Promise.all([redis.quit(), reader.quit()]);
  return rtts;
}

const redis: BenchRedis = await startRedis();
const { url, dir } = redis;
try {
  const before = await redis.usedMemory();
  const fabric = await fabricRun(url, dir, 'main', TOTAL, 'maxDemand: 1000', false);
  const after = await redis.usedMemory();
  const raw = await rawRun(url, 'raw:bench', TOTAL, BATCH);
  // Ten times the batching on both sides: what the window of asks in flight costs.
  const fabricLarge = await fabricRun(url, dir, 'large', TOTAL, `maxDemand: ${LARGE * 2}, minDemand: ${LARGE}`, false);
  const rawLarge = await rawRun(url, 'raw:large', TOTAL, LARGE);
  const ping = await fabricRun(url, dir, 'ping', WARMUP + PINGS + 1, 'maxDemand: 1, minDemand: 0', true);
  const measured = ping.times.slice(-(PINGS + 1));
  const pingGaps = measured.slice(1).map((t, i) => t - (measured[i] as number));
  const rawRtts = await rawPing(url);
  const peak = Number(/used_memory_peak:(\d+)/.exec(await redis.admin.info('memory'))?.[1]);
  const fabricSettings = { events: TOTAL, maxDemand: 1000, minDemand: 500, eventsPerEntry: BATCH, agents: 2, transport: 'redis streams' };
  const rawSettings = { events: TOTAL, eventsPerEntry: BATCH, xreadgroupCount: 100, processes: 2, client: 'ioredis' };
  const fig = (figure: string, value: number, unit: string, subject: string, settings: Record<string, unknown>) =>
    emitFigure(json, { bench: 'transport', figure, value, unit, subject, settings });
  fig('fabric_events_per_s', Math.round(fabric.count / (fabric.ms / 1000)), 'events/s', 'stagefabric', fabricSettings);
  fig('bare_streams_events_per_s', Math.round(raw.count / (raw.ms / 1000)), 'events/s', 'bare redis streams', rawSettings);
  fig('fabric_events_per_s_5000_per_entry', Math.round(fabricLarge.count / (fabricLarge.ms / 1000)), 'events/s', 'stagefabric', {
    ...fabricSettings,
    maxDemand: LARGE * 2,
    minDemand: LARGE,
    eventsPerEntry: LARGE,
  });
  fig('bare_streams_events_per_s_5000_per_entry', Math.round(rawLarge.count / (rawLarge.ms / 1000)), 'events/s', 'bare redis streams', {
    ...rawSettings,
    eventsPerEntry: LARGE,
  });
  fig('fabric_round_trip_p50_ms', Number(p50(pingGaps).toFixed(3)), 'ms', 'stagefabric', {
    pings: PINGS,
    warmupPings: WARMUP,
    maxDemand: 1,
    minDemand: 0,
  });
  fig('bare_stream_ping_p50_ms', Number(p50(rawRtts).toFixed(3)), 'ms', 'bare redis streams', {
    pings: PINGS,
    warmupPings: WARMUP,
    echo: 'XREAD BLOCK + XADD',
  });
  fig('fabric_redis_memory_growth_bytes', after - before, 'bytes', 'stagefabric', fabricSettings);
  fig('redis_used_memory_peak_bytes', peak, 'bytes', 'whole transport run', {});
} finally {
  await redis.stop();
}
