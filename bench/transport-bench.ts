/**
 * npm run bench:transport [-- --json] [-- --events N]
 *
 * A producer agent and a consumer agent as two processes over a Redis of the
 * benchmark's own, at maxDemand 1000, beside a bare ioredis baseline (one
 * process XADDs batches of 1000 events per entry, another reads them with
 * XREADGROUP COUNT and XACKs); then one-event round trips through the fabric
 * (maxDemand 1: every event waits for its ask) and through a bare stream pair.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';

const args = process.argv.slice(2);
const json = args.includes('--json');
const eventsArg = args.indexOf('--events');
const TOTAL = eventsArg >= 0 ? Number(args[eventsArg + 1]) : 2_000_000;
const PINGS = 300;
const ROOT = resolve(import.meta.dirname, '../..');
const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');
const STAGES = join(ROOT, 'bench/transport-stages.mjs');
const PEER = join(ROOT, 'bench/raw-redis-peer.mjs');

function freePort(): Promise<number> {
  return new Promise((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => ok(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

function run(cmd: string[], env: Record<string, string> = {}): { child: ChildProcess; output: Promise<string> } {
  const child = spawn(process.execPath, cmd, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const output = new Promise<string>((ok, fail) =>
    child.on('exit', (code, signal) =>
      code === 0 || signal === 'SIGTERM' ? ok(out) : fail(new Error(`${cmd.join(' ')} exited ${code}: ${err.slice(-500)}`)),
    ),
  );
  return { child, output };
}

/** Runs a producer agent and a consumer agent; returns the sink's report. */
async function fabricRun(url: string, dir: string, limit: number, subscribe: string, gaps: boolean) {
  const topology = join(dir, `topology-${limit}-${gaps}.yaml`);
  writeFileSync(
    topology,
    `stages:
  source: { module: ${STAGES}, args: { limit: ${limit} }, nodes: [a] }
  sink: { module: ${STAGES}, args: { limit: ${limit}, gaps: ${gaps} }, nodes: [b], restart: transient, subscribe: [{ to: source, ${subscribe} }] }
`,
  );
  const env = { REDIS_URL: url, STAGEFABRIC_NAMESPACE: `bench${limit}${gaps}`, LOG_LEVEL: 'warn' };
  const consumer = run([STAGECTL, 'up', topology, '--node', 'b'], env);
  const producer = run([STAGECTL, 'up', topology, '--node', 'a'], env);
  const line = (await consumer.output).trim().split('\n').at(-1) as string;
  producer.child.kill('SIGTERM');
  await producer.output;
  return JSON.parse(line) as { count: number; ms: number; times: number[] };
}

async function rawRun(url: string, total: number) {
  const consumer = run([PEER, 'consume', url, 'raw:bench', String(total)]);
  await new Promise((r) => setTimeout(r, 200));
  const producer = run([PEER, 'produce', url, 'raw:bench', String(total)]);
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
  for (let i = 0; i < PINGS; i++) {
    const start = performance.now();
    await redis.xadd('raw:ping:in', '*', 'm', String(i));
    const reply = await reader.xread('BLOCK', 1000, 'STREAMS', 'raw:ping:out', last);
    last = reply?.[0]?.[1]?.at(-1)?.[0] ?? last;
    rtts.push(performance.now() - start);
  }
  await redis.xadd('raw:ping:in', '*', 'm', 'stop');
  await echo.output;
  await Promise.all([redis.quit(), reader.quit()]);
  return rtts;
}

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const port = await freePort();
const dir = mkdtempSync(join(tmpdir(), 'sf-bench-'));
const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
  stdio: 'ignore',
});
const url = `redis://127.0.0.1:${port}`;
const admin = new Redis(url, { retryStrategy: (n) => (n > 50 ? null : 50) });
// The server may take a moment to listen; the client retries until it does.
admin.on('error', () => {});
try {
  await admin.ping();
  const memory = async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]);
  const before = await memory();
  const fabric = await fabricRun(url, dir, TOTAL, 'maxDemand: 1000', false);
  const after = await memory();
  const raw = await rawRun(url, TOTAL);
  const ping = await fabricRun(url, dir, PINGS, 'maxDemand: 1, minDemand: 0', true);
  const pingGaps = ping.times.slice(1).map((t, i) => t - (ping.times[i] as number));
  const rawRtts = await rawPing(url);
  const peak = Number(/used_memory_peak:(\d+)/.exec(await admin.info('memory'))?.[1]);
  const result = {
    events_per_s: Math.round(fabric.count / (fabric.ms / 1000)),
    raw_redis_events_per_s: Math.round(raw.count / (raw.ms / 1000)),
    ping_p50_ms: Number(p50(pingGaps).toFixed(3)),
    raw_ping_p50_ms: Number(p50(rawRtts).toFixed(3)),
    redis_used_memory_peak_bytes: peak,
    redis_used_memory_growth_bytes: after - before,
  };
  if (json) console.log(JSON.stringify(result));
  else {
    const m = (n: number) => `${(n / 1e6).toFixed(2)} M events/s`;
    console.log(`events: ${TOTAL.toLocaleString('en')}, maxDemand 1000, two agent processes over one Redis`);
    console.log(
      `stagefabric            ${m(result.events_per_s)}  (${(result.events_per_s / result.raw_redis_events_per_s).toFixed(2)} of bare Redis)`,
    );
    console.log(`bare ioredis streams   ${m(result.raw_redis_events_per_s)}`);
    console.log(`one-event round trip   stagefabric p50 ${result.ping_p50_ms} ms, bare stream pair p50 ${result.raw_ping_p50_ms} ms`);
    console.log(
      `redis memory           peak ${(peak / 2 ** 20).toFixed(1)} MiB; growth over the fabric run ${((after - before) / 1024).toFixed(0)} KiB`,
    );
  }
} finally {
  await admin.quit();
  server.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
