import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { nextFire, type ScheduleRecord, type TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { waitFor } from '../support/wait-for.js';

const MINUTE = 60_000;
const RACERS = 4;
const RACER = join(import.meta.dirname, 'schedule-racer.mjs');

interface Racer {
  readonly child: ChildProcess;
  /** The latest `ticked FIRED SKIPPED DUPLICATES` line, and how many came. */
  last: [number, number, number];
  ticks: number;
  ready: boolean;
  stderr: string;
}

const racers: Racer[] = [];

function startRacer(kind: string, url: string, namespace: string, startMs: number): Racer {
  const child = spawn(process.execPath, [RACER, kind, url, namespace, String(startMs)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const racer: Racer = { child, last: [0, 0, 0], ticks: 0, ready: false, stderr: '' };
  child.stderr?.on('data', (d: Buffer) => {
    racer.stderr += d.toString();
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    if (line === 'ready') racer.ready = true;
    const m = /^ticked (\d+) (\d+) (\d+)$/.exec(line);
    if (m) {
      racer.last = [Number(m[1]), Number(m[2]), Number(m[3])];
      racer.ticks++;
    }
  });
  racers.push(racer);
  return racer;
}

/** Every racer makes one pass at fake time `ms`, all at once; resolves when each has answered. */
async function tickAll(ms: number): Promise<void> {
  const before = racers.map((r) => r.ticks);
  for (const r of racers) r.child.stdin?.write(`tick ${ms}\n`);
  await waitFor(
    () => racers.every((r, i) => r.ticks > (before[i] ?? 0)),
    `every scheduler's pass at ${new Date(ms).toISOString()}`,
    30_000,
  );
}

afterEach(async () => {
  for (const r of racers.splice(0)) {
    r.child.stdin?.end();
    if (r.child.exitCode === null) await new Promise((resolve) => r.child.once('exit', resolve));
  }
});

const backends: {
  name: string;
  open: () => Promise<{ store: TaskStore; kind: string; url: string; namespace: string; cleanup: () => Promise<void> }>;
}[] = [
  {
    name: 'PostgreSQL',
    open: async () => {
      const url = inject('databaseUrl');
      const schema = `sf_sched${randomUUID().slice(0, 8)}`;
      const store = new PostgresTaskStore({ url, schema });
      await store.migrate();
      return {
        store,
        kind: 'postgres',
        url,
        namespace: schema,
        cleanup: async () => {
          const admin = new pg.Client({ connectionString: url });
          await admin.connect();
          await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
          await admin.end();
        },
      };
    },
  },
  {
    name: 'Redis through BullMQ',
    open: async () => {
      const url = inject('redisUrl');
      const prefix = `sfsched${randomUUID().slice(0, 8)}`;
      const store = new BullMQTaskStore({ url, prefix });
      await store.migrate();
      return { store, kind: 'bullmq', url, namespace: prefix, cleanup: async () => {} };
    },
  },
];

describe.each(backends)('schedules on $name: schedulers in separate processes racing', ({ open }) => {
  it('each fire enqueues one task; fires missed while every scheduler was down are enqueued on return up to the backfill', async () => {
    const { store, kind, url, namespace, cleanup } = await open();
    try {
      await store.defineSchedules([
        { name: 'minutely', cron: '* * * * *', backfill: 3, task: { name: 'minutely-task' } },
        // Many fires per pass, so the schedulers race on many fire times.
        { name: 'secondly', cron: '* * * * * *', task: { name: 'secondly-task', options: { queue: 'seconds' } } },
      ]);
      const minutely = (await store.schedules()).find((s) => s.name === 'minutely') as ScheduleRecord;
      const first = (nextFire(minutely, minutely.createdAt) as Date).getTime();
      for (let i = 0; i < RACERS; i++) startRacer(kind, url, namespace, first - 1);
      await waitFor(() => racers.every((r) => r.ready), 'every scheduler process to open the store', 30_000);

      await tickAll(first + 500);
      await tickAll(first + MINUTE + 500);
      await tickAll(first + MINUTE + 500);
      // Every scheduler down for nine minutes: minutely fires 2..10 are missed; on return the latest three run.
      await tickAll(first + 10 * MINUTE + 30_500);

      const keysOf = async (name: string) =>
        (await store.list({ name, limit: 10_000 })).map((t) => (t.uniqueKey ?? '').replace(/^schedule:[a-z]+:/, '')).sort();
      const at = (n: number) => new Date(first + n * MINUTE).toISOString();
      expect(await keysOf('minutely-task')).toEqual([at(0), at(1), at(8), at(9), at(10)]);
      const seconds = await keysOf('secondly-task');
      // One task per fire time, never two.
      expect(new Set(seconds).size).toBe(seconds.length);
      // The last pass: the fires of the five seconds before it (the rest of the nine minutes were missed, backfill 0).
      expect(seconds.slice(-5)).toEqual([-4, -3, -2, -1, 0].map((s) => new Date(first + 10 * MINUTE + 30_000 + s * 1000).toISOString()));
      const fired = racers.reduce((n, r) => n + r.last[0], 0);
      const skipped = racers.reduce((n, r) => n + r.last[1], 0);
      const duplicates = racers.reduce((n, r) => n + r.last[2], 0);
      // Each fire reported by exactly one scheduler: the one whose atomic step took it.
      expect(fired).toBe(5 + seconds.length);
      expect(duplicates).toBe(0);
      expect(skipped).toBeGreaterThanOrEqual(6);
      expect(racers.map((r) => r.stderr)).toEqual(racers.map(() => ''));
    } finally {
      await store.close();
      await cleanup();
    }
  });
});
