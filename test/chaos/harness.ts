import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { freePort, startLocalPostgres, startLocalRedis } from '../support/servers.js';
import { ChaosAgent, ROOT } from './agents.js';
import { checkStores, type StoreFigures, type Verdict } from './check.js';
import { type FaultKind, type FaultRecord, type FaultTargets, inject, planFault } from './faults.js';
import { MemoryMonitor, mib } from './monitor.js';
import { makeNetwork } from './network.js';
import { Random } from './random.js';
import { createSchema, Workload } from './workload.js';

export interface ChaosOptions {
  readonly seed: number;
  readonly minutes: number;
  /** After the last fault, the stream and the drain must finish within this. Default 180 000 ms. */
  readonly recoveryMs?: number;
  readonly network?: 'auto' | 'loopback';
  /** Keeps concurrent runs' namespaces and addresses apart (0-249). Default: from the process id. */
  readonly slot?: number;
  readonly burstSize?: number;
  /** Keep the run's folder (logs, demand records) even when every invariant holds. */
  readonly keep?: boolean;
  readonly log?: (line: string) => void;
  /** Ends the faults early (Ctrl-C); the run still cleans up and reports. */
  readonly signal?: AbortSignal;
}

export interface ChaosReport {
  readonly seed: number;
  readonly minutes: number;
  readonly network: string;
  readonly faults: Record<FaultKind, number>;
  readonly faultLog: readonly FaultRecord[];
  readonly figures: StoreFigures;
  readonly recoveryMs: number | undefined;
  readonly heapMaxBytes: Record<string, number>;
  readonly redisMaxBytes: number;
  readonly agentStarts: Record<string, number>;
  readonly verdicts: readonly Verdict[];
  readonly ok: boolean;
  readonly dir: string;
}

const HOSTS = ['h1', 'h2', 'h3'];
const HEARTBEAT_MS = 1000;
const MISSED_BEATS = 3;
const LEASE_MS = 4000;
const BOUNDS = { heapBytes: 256 * 1024 * 1024, redisBytes: 256 * 1024 * 1024 };

function topology(schema: string): string {
  const stages = join(ROOT, 'test/chaos/stages.mjs');
  const handlers = join(ROOT, 'test/chaos/handlers.mjs');
  return `# The chaos run: the chocolates pipeline across the three hosts, and a task drain whose
# producer claims on h1 for runners on h2 and h3, so every task crosses hosts.
tasks: { handlers: ${handlers}, schema: ${schema} }
stages:
  maker: { module: ${stages}, args: { redeliverMs: 15000 }, nodes: [h1] }
  wrapper: { module: ${stages}, nodes: [h2], subscribe: [{ to: maker, maxDemand: 200, minDemand: 100 }] }
  packer: { module: ${stages}, nodes: [h3], subscribe: [{ to: wrapper, maxDemand: 200, minDemand: 100 }] }
  tasks: { module: stagefabric:task-producer, args: { pollIntervalMs: 500, leaseMs: ${LEASE_MS} }, nodes: [h1] }
  runner:
    module: stagefabric:task-runner
    args: { leaseMs: ${LEASE_MS}, concurrency: 20 }
    nodes: [h2, h3]
    subscribe: [{ to: tasks, maxDemand: 40, minDemand: 20 }]
`;
}

async function until(condition: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition().catch(() => false)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * One chaos run: three hosts, Redis and PostgreSQL of its own, the pipeline
 * and the drain under seeded faults for `minutes`, then recovery, then the
 * invariants checked from the stores.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? ((line: string) => console.log(line));
  const recoveryBound = options.recoveryMs ?? 180_000;
  const dir = mkdtempSync(join(tmpdir(), `sf-chaos-${options.seed}-`));
  const faultRandom = new Random(options.seed);
  const workRandom = new Random(options.seed ^ 0x9e3779b9);
  const network = makeNetwork(HOSTS, options.slot ?? process.pid % 250, options.network ?? 'auto');
  log(
    network.mode === 'netns'
      ? `hosts: ${network.hosts.map((h) => `${h.name} ${h.address}`).join(', ')} (network namespaces); servers on ${network.serverAddress}`
      : `hosts: three processes on loopback, NOT separate network namespaces (${network.fallbackReason}); partitions are skipped`,
  );
  const cleanups: (() => Promise<void> | void)[] = [() => network.destroy()];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  };
  try {
    const listen = network.mode === 'netns' ? [network.serverAddress] : [];
    const redis = await startLocalRedis([
      '--bind',
      '127.0.0.1',
      ...listen,
      '--protected-mode',
      'no',
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
    ]);
    cleanups.push(() => redis.stop());
    const postgres = await startLocalPostgres(listen);
    cleanups.push(() => postgres.stop());
    const pool = new pg.Pool({ connectionString: postgres.url, max: 4 });
    pool.on('error', () => {});
    cleanups.push(() => pool.end());
    const redisClient = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false });
    redisClient.on('error', () => {});
    cleanups.push(() => void redisClient.disconnect());

    const schema = 'chaos';
    await createSchema(pool, schema);
    const topologyFile = join(dir, 'topology.yaml');
    writeFileSync(topologyFile, topology(schema));
    const namespace = `chaos${randomUUID().slice(0, 6)}`;
    const env = {
      REDIS_URL: `redis://${network.serverAddress}:${redis.port}`,
      DATABASE_URL: `postgres://postgres@${network.serverAddress}:${postgres.port}/test`,
      STAGEFABRIC_NAMESPACE: namespace,
      STAGEFABRIC_HEARTBEAT_MS: String(HEARTBEAT_MS),
      CHAOS_SCHEMA: schema,
      LOG_LEVEL: 'info',
    };
    let finishing = false;
    const unexpected: string[] = [];
    const agents: ChaosAgent[] = [];
    for (const host of network.hosts) {
      agents.push(
        new ChaosAgent(host, {
          topology: topologyFile,
          env,
          dir,
          metricsPort: await freePort(),
          onUnexpectedExit: (agent, code, signal) => {
            unexpected.push(`${agent.host.name} exited by itself (code ${code}, signal ${signal}) at ${new Date().toISOString()}`);
            log(`!! agent ${agent.host.name} exited by itself (code ${code}, signal ${signal}); see ${agent.logFile}`);
            if (!finishing) setTimeout(() => agent.start(), 1000);
          },
        }),
      );
    }
    cleanups.push(async () => {
      finishing = true;
      await Promise.all(agents.map((a) => a.kill()));
    });
    for (const a of agents) a.start();

    const workload = new Workload(pool, postgres.url, schema, workRandom, { eventsPerSecond: 200, tasksPerSecond: 30 });
    cleanups.push(() => workload.close());
    const monitor = new MemoryMonitor(agents, redisClient, BOUNDS);
    cleanups.push(() => monitor.stop());
    const count = async (sql: string) => Number((await pool.query(sql)).rows[0]?.n ?? 0);
    const progress = async () => {
      const [events, handled, open, tasks] = await Promise.all([
        count(`SELECT count(*) AS n FROM ${schema}.events`),
        count(`SELECT handled AS n FROM ${schema}.totals`),
        count(`SELECT count(*) AS n FROM ${schema}.tasks WHERE state IN ('waiting', 'running')`),
        count(`SELECT count(*) AS n FROM ${schema}.tasks`),
      ]);
      return { events, handled, open, tasks };
    };
    workload.start();
    monitor.start();
    const flowing = await until(async () => (await progress()).handled > 0, 90_000);
    if (!flowing) throw new Error(`the pipeline did not start within 90 s; agent logs in ${dir}`);
    log(`pipeline flowing; faults for ${options.minutes} min from seed ${options.seed}`);

    const targets: FaultTargets = {
      agents,
      network,
      redis,
      postgres,
      redisClient,
      namespace,
      workload,
      heartbeatTimeoutMs: HEARTBEAT_MS * MISSED_BEATS,
      leaseMs: LEASE_MS,
      burstSize: options.burstSize ?? 50_000,
    };
    const faults = { 'kill-agent': 0, 'restart-redis': 0, 'restart-postgres': 0, partition: 0, pause: 0, garbage: 0, burst: 0 };
    const faultLog: FaultRecord[] = [];
    const startedAt = Date.now();
    const endAt = startedAt + options.minutes * 60_000;
    let lastProgress = Date.now();
    while (Date.now() < endAt && options.signal?.aborted !== true) {
      const plan = planFault(faultRandom, targets);
      const quietMs = faultRandom.int(2000, 8000);
      await new Promise((r) => setTimeout(r, Math.min(quietMs, Math.max(0, endAt - Date.now()))));
      if (Date.now() >= endAt) break;
      const record = await inject(plan, targets);
      if (record !== undefined) {
        faults[record.kind]++;
        faultLog.push(record);
        log(
          `${((record.at - startedAt) / 1000).toFixed(0).padStart(5)} s  ${record.kind.padEnd(16)} ${record.target.padEnd(12)} ${(record.ms / 1000).toFixed(1)} s${record.detail === undefined ? '' : `  ${record.detail}`}`,
        );
      }
      if (Date.now() - lastProgress > 30_000) {
        lastProgress = Date.now();
        const p = await progress().catch(() => undefined);
        if (p !== undefined) log(`        events ${p.handled}/${p.events} handled; tasks ${p.tasks - p.open}/${p.tasks} finished`);
      }
    }

    workload.stop();
    log('faults over; waiting for the stream and the drain to finish');
    const recoveryStart = Date.now();
    const recovered = await until(async () => {
      if (options.signal?.aborted) return true;
      const p = await progress();
      return p.open === 0 && p.handled >= p.events;
    }, recoveryBound);
    if (options.signal?.aborted) throw new Error('interrupted: no invariants checked');
    const recoveryMs = recovered ? Date.now() - recoveryStart : undefined;
    monitor.stop();
    finishing = true;
    const stops = await Promise.all(agents.map((a) => a.stop()));

    const { verdicts, figures } = await checkStores(pool, schema, agents);
    const allVerdicts: Verdict[] = [
      ...verdicts,
      {
        invariant: `the fabric recovered: stream and drain finished within ${recoveryBound / 1000} s of the last fault`,
        ok: recovered,
        detail: recovered ? `${((recoveryMs ?? 0) / 1000).toFixed(1)} s` : JSON.stringify(await progress().catch(() => ({}))),
      },
      {
        invariant: `agent heap stayed under ${mib(BOUNDS.heapBytes)} and Redis under ${mib(BOUNDS.redisBytes)}`,
        ok: monitor.breaches.length === 0 && monitor.samples > 0,
        detail:
          monitor.breaches.length > 0
            ? monitor.breaches.join('; ')
            : `${monitor.samples} samples; heap max ${[...monitor.heapMax].map(([h, b]) => `${h} ${mib(b)}`).join(', ')}; redis max ${mib(monitor.redisMax)}`,
      },
      { invariant: 'no agent exited by itself', ok: unexpected.length === 0, detail: unexpected.join('; ') || 'none' },
      {
        invariant: 'every agent stopped gracefully on SIGTERM at the end',
        ok: stops.every((s) => s === 'graceful'),
        detail: stops.map((s, i) => `${HOSTS[i]} ${s}`).join(', '),
      },
    ];
    const ok = allVerdicts.every((v) => v.ok);
    const report: ChaosReport = {
      seed: options.seed,
      minutes: options.minutes,
      network: network.mode,
      faults,
      faultLog,
      figures,
      recoveryMs,
      heapMaxBytes: Object.fromEntries(monitor.heapMax),
      redisMaxBytes: monitor.redisMax,
      agentStarts: Object.fromEntries(agents.map((a) => [a.host.name, a.starts])),
      verdicts: allVerdicts,
      ok,
      dir,
    };
    writeFileSync(join(dir, 'report.json'), JSON.stringify(report, null, 2));
    return report;
  } finally {
    await cleanup();
  }
}

/** Removes a run's folder (logs, demand records), unless asked to keep it. */
export function discard(report: ChaosReport, keep: boolean): void {
  if (!keep && report.ok) rmSync(report.dir, { recursive: true, force: true });
}

export function summary(report: ChaosReport): string {
  const lines = [
    `chaos run: seed ${report.seed}, ${report.minutes} min, hosts on ${report.network}`,
    `faults: ${Object.entries(report.faults)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}`,
    `tasks: ${Object.entries(report.figures.tasks)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}; successful runs recorded ${report.figures.taskRuns}`,
    `events: ${report.figures.events} produced, ${report.figures.eventsHandled} took effect; ${report.figures.repeats} repeat deliveries, ${report.figures.resent} re-sent by the maker`,
    `demand: ${report.figures.demandRecords} records of ${report.figures.subscriptions} subscriptions`,
    ...report.verdicts.map((v) => `${v.ok ? 'ok  ' : 'FAIL'}  ${v.invariant}: ${v.detail}`),
    report.ok ? 'no violations' : `VIOLATIONS: logs and records kept in ${report.dir}`,
    `replay: npm run chaos -- --seed ${report.seed} --minutes ${report.minutes}`,
  ];
  return lines.join('\n');
}
