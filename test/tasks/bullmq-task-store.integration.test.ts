import { randomUUID } from 'node:crypto';
import { resolveRetention, type TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { expect, inject, it } from 'vitest';
import { cancelRunningConformance } from '../../packages/tasks/test/cancel-running.conformance.js';
import { retentionStoreConformance } from '../../packages/tasks/test/retention-store.conformance.js';
import { scheduleStoreConformance } from '../../packages/tasks/test/schedule-store.conformance.js';
import { taskBackoffConformance } from '../../packages/tasks/test/task-backoff.conformance.js';
import { taskStoreConformance } from '../../packages/tasks/test/task-store.conformance.js';
import { taskStoreLimitsConformance } from '../../packages/tasks/test/task-store-limits.conformance.js';
import { uniqueWindowConformance } from '../../packages/tasks/test/unique-window.conformance.js';
import { waitFor } from '../support/wait-for.js';

const url = inject('redisUrl');

const prefixOf = new WeakMap<object, string>();

// A key prefix per store: each test sees only its own queues.
async function make() {
  const prefix = `sfbull${randomUUID().slice(0, 8)}`;
  const store = new BullMQTaskStore({ url, prefix });
  prefixOf.set(store, prefix);
  await store.migrate();
  return store;
}
// Another node: a store of its own on the same queues, sharing nothing in memory.
const peer = async (store: TaskStore) => new BullMQTaskStore({ url, prefix: prefixOf.get(store) as string });

taskStoreConformance('Redis through BullMQ', make, peer);
taskStoreLimitsConformance('Redis through BullMQ', make, peer, { groups: false });
retentionStoreConformance('Redis through BullMQ', make);
scheduleStoreConformance('Redis through BullMQ', make, peer);
uniqueWindowConformance('Redis through BullMQ', make);
cancelRunningConformance('Redis through BullMQ', make);
taskBackoffConformance('Redis through BullMQ', make);

it('BullMQ refuses retention with different rules for error, timeout and cancelled (one failed set), naming why', async () => {
  const store = new BullMQTaskStore({ url, prefix: `sfbull${randomUUID().slice(0, 8)}` });
  try {
    const policy = resolveRetention({ error: { maxAgeMs: 1000 }, timeout: { maxAgeMs: 2000 } });
    await expect(store.pruneFinished(policy, 10)).rejects.toMatchObject({
      code: 'SF_BAD_OPTION',
      message: expect.stringMatching(/error, timeout and cancelled tasks in one failed set/),
    });
  } finally {
    await store.close();
  }
});

it("a queue with BullMQ's own global concurrency, fetched through getNextJob, keeps Stagefabric's limits as well", async () => {
  const store = await make();
  const other = await peer(store);
  const { hostname, port } = new URL(url);
  const bull = new Queue('default', { prefix: prefixOf.get(store) as string, connection: { host: hostname, port: Number(port) } });
  try {
    await bull.setGlobalConcurrency(10);
    await store.setLimits('default', { concurrency: 2 });
    await store.enqueue(Array.from({ length: 6 }, (_, n) => ({ name: 't', args: n })));
    const [a, b] = await Promise.all([store.claim('default', 5, 'a', 10_000), other.claim('default', 5, 'b', 10_000)]);
    const held = [...(a ?? []), ...(b ?? [])];
    expect(held).toHaveLength(2);
    await store.complete(held.slice(0, 1).map((t) => ({ id: t.id, attempt: t.attempt, claimant: t.claimant, status: 'success' as const })));
    expect(await other.claim('default', 5, 'b', 10_000)).toHaveLength(1);
    await store.setLimits('default', null);
    // BullMQ's own limit alone now (10 active at most): the three left all come.
    expect(await store.claim('default', 10, 'a', 10_000)).toHaveLength(3);
  } finally {
    await bull.close();
    await other.close();
    await store.close();
  }
});

it('counts() reads no failed job: Redis tells error, timeout and cancelled apart from the failed set and its marks', async () => {
  const store = await make();
  const prefix = prefixOf.get(store) as string;
  const monitor = await new Redis(url).monitor();
  try {
    const n = 30;
    await store.enqueue(Array.from({ length: n }, (_, i) => ({ name: 't', args: i, options: { maxAttempts: 1 } })));
    const claimed = await store.claim('default', n, 'me', 10_000);
    const done = await store.complete(
      claimed.map((t, i) => ({
        id: t.id,
        attempt: t.attempt,
        claimant: t.claimant,
        status: i % 3 === 0 ? ('timeout' as const) : ('error' as const),
        error: 'no',
      })),
    );
    expect(done).toHaveLength(n);
    expect(await store.cancel((await store.enqueue([{ name: 'c1' }, { name: 'c2' }])).map((r) => r.id))).toHaveLength(2);
    // Every command Redis runs from here on, scripts' included, as MONITOR shows them. MONITOR's stream lags the
    // commands: what it shows before a marker sent now ran before now, and is left out.
    const seen: string[][] = [];
    const marker = `counts-from-here-${Date.now()}`;
    let marked = false;
    monitor.on('monitor', (_time: string, args: string[]) => {
      if (marked) seen.push(args);
      else marked = args[0]?.toUpperCase() === 'ECHO' && args[1] === marker;
    });
    const client = new Redis(url);
    await client.echo(marker);
    await client.quit();
    await waitFor(() => marked, 'MONITOR to show the marker');
    expect(await store.counts()).toEqual([
      { queue: 'default', state: 'cancelled', count: 2 },
      { queue: 'default', state: 'error', count: 20 },
      { queue: 'default', state: 'timeout', count: 10 },
    ]);
    await waitFor(() => seen.some((args) => args[0]?.toUpperCase() === 'ZINTERCARD'), 'the count script to be seen');
    const jobKey = new RegExp(`^${prefix}:default:[0-9a-f-]{36}$`);
    expect(seen.filter((args) => args.some((a) => jobKey.test(a)))).toEqual([]);
  } finally {
    monitor.disconnect();
    await store.close();
  }
});
