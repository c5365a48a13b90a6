import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { waitFor } from '../support/wait-for.js';

const url = inject('redisUrl');
const CHILD = join(import.meta.dirname, 'bullmq-crash-child.mjs');
const KILLS = 8;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** Runs the crash child until it has done `rounds` rounds, then kills it with SIGKILL; resolves once it is gone. */
async function runAndKill(prefix: string, rounds: number): Promise<void> {
  const child = spawn(process.execPath, [CHILD, url, prefix], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  let done = 0;
  child.stdout.on('data', (chunk: Buffer) => {
    for (const b of chunk) if (b === 0x0a) done++;
  });
  try {
    await waitFor(() => done >= rounds || child.exitCode !== null, `${rounds} rounds of the crash child`, 30_000);
    expect(child.exitCode, 'the crash child exited by itself').toBeNull();
  } finally {
    child.kill('SIGKILL');
  }
  expect(await exited).toBe('SIGKILL');
}

interface JobState {
  id: string;
  state: string;
  hash: Record<string, string>;
}

/** Every job of the queue with the one state set that holds it; fails when a job is in none or in two. */
async function jobsOf(redis: Redis, prefix: string): Promise<JobState[]> {
  const base = `${prefix}:default:`;
  const where = new Map<string, string[]>();
  const note = (ids: string[], state: string) => {
    for (const id of ids) where.set(id, [...(where.get(id) ?? []), state]);
  };
  for (const list of ['wait', 'paused', 'active']) note(await redis.lrange(base + list, 0, -1), list);
  for (const set of ['prioritized', 'delayed', 'completed', 'failed']) note(await redis.zrange(base + set, 0, -1), set);
  const hashes = (await redis.keys(`${base}*`)).map((k) => k.slice(base.length)).filter((id) => UUID.test(id));
  for (const id of hashes) expect(where.get(id), `job ${id} is in exactly one state`).toHaveLength(1);
  const out: JobState[] = [];
  for (const [id, states] of where) {
    expect(states, `job ${id} is in exactly one state`).toHaveLength(1);
    const hash = await redis.hgetall(base + id);
    expect(Object.keys(hash).length, `job ${id} listed as ${states[0]} exists`).toBeGreaterThan(0);
    out.push({ id, state: states[0] as string, hash });
  }
  return out;
}

const PENDING = new Set(['wait', 'paused', 'prioritized', 'delayed', 'active']);
const lastEntry = (stacktrace: string | undefined) => {
  const entries = JSON.parse(stacktrace ?? '[]') as string[];
  const last = entries.at(-1);
  return last === undefined ? undefined : (JSON.parse(last) as { outcome: string });
};

describe('the BullMQ store when its process is killed between operations', () => {
  it('leaves no unique key without its pending task, none on a finished task, and every task in one consistent state', async () => {
    const prefix = `sfcrash${randomUUID().slice(0, 8)}`;
    const redis = new Redis(url);
    const store = new BullMQTaskStore({ url, prefix });
    cleanup.push(async () => {
      await store.close();
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
    });
    // Each kill lands at a moment picked at random: after 5 to 60 rounds of 16 loops' enqueues, claims and outcomes.
    for (let i = 0; i < KILLS; i++) await runAndKill(prefix, 5 + Math.floor(Math.random() * 56));

    // The dead processes' leases lapse; recovery takes their tasks back (counts() makes the queue known to this store).
    await store.counts();
    await waitFor(
      async () => {
        await store.recoverExpired();
        return (await redis.llen(`${prefix}:default:active`)) === 0;
      },
      'every lease of the killed processes to be recovered',
      10_000,
    );

    const jobs = await jobsOf(redis, prefix);
    expect(jobs.length).toBeGreaterThan(0);
    const byId = new Map(jobs.map((j) => [j.id, j]));
    // Every unique key names a job that exists and is still pending: none blocked without its task, none kept by a finished one.
    const keys = await redis.keys(`${prefix}:default:de:*`);
    for (const key of keys) {
      const holder = (await redis.get(key)) as string;
      const job = byId.get(holder);
      expect(job, `unique key ${key} names a task that exists`).toBeDefined();
      expect(PENDING.has(job?.state as string), `unique key ${key} names a pending task, not one ${job?.state}`).toBe(true);
    }
    for (const job of jobs) {
      const data = JSON.parse(job.hash.data as string) as { uniqueKey: string; maxAttempts: number };
      const attempt = Number(job.hash.ats ?? 0);
      if (PENDING.has(job.state)) {
        // A pending task holds its key, and has attempts left.
        expect(await redis.get(`${prefix}:default:de:${data.uniqueKey}`), `pending task ${job.id} holds its unique key`).toBe(job.id);
        expect(attempt, `pending task ${job.id} has attempts left`).toBeLessThan(data.maxAttempts);
      } else if (job.state === 'completed') {
        expect(job.hash.finishedOn, `succeeded task ${job.id} has finished`).toBeDefined();
        expect(JSON.parse(job.hash.returnvalue as string), `succeeded task ${job.id} records its attempt`).toMatchObject({
          outcome: 'success',
          attempt,
        });
      } else {
        expect(job.hash.finishedOn, `failed task ${job.id} has finished`).toBeDefined();
        expect(['error', 'timeout', 'cancelled', 'lost'], `failed task ${job.id} records why`).toContain(
          lastEntry(job.hash.stacktrace)?.outcome,
        );
      }
    }
    // At most one pending task per key (the key refused the others).
    const pendingKeys = jobs
      .filter((j) => PENDING.has(j.state))
      .map((j) => (JSON.parse(j.hash.data as string) as { uniqueKey: string }).uniqueKey);
    expect(new Set(pendingKeys).size).toBe(pendingKeys.length);

    // Drained, every key is free again.
    await waitFor(
      async () => {
        const claimed = await store.claim('default', 100, 'inspector', 10_000);
        await store.complete(claimed.map((t) => ({ id: t.id, attempt: t.attempt, claimant: t.claimant, status: 'success' as const })));
        return (await redis.keys(`${prefix}:default:de:*`)).length === 0;
      },
      'the drain to free every unique key',
      10_000,
    );
    const again = await store.enqueue(Array.from({ length: 24 }, (_, k) => ({ name: 'crash', options: { uniqueKey: `k${k}` } })));
    expect(again.every((r) => !r.duplicate)).toBe(true);
  });
});
