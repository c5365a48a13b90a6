import { randomUUID } from 'node:crypto';
import { StageSystem } from '@stagefabric/runtime';
import { startTaskPipeline, TaskRegistry } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { FlowProducer, Queue } from 'bullmq';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { waitFor } from '../support/wait-for.js';

const url = inject('redisUrl');
const open: { store: BullMQTaskStore; system: StageSystem }[] = [];

afterEach(async () => {
  for (const { store, system } of open.splice(0)) {
    await system.shutdown();
    await store.close();
  }
});

async function runner(registry: TaskRegistry, prefix: string) {
  const store = new BullMQTaskStore({ url, prefix });
  const system = new StageSystem();
  open.push({ store, system });
  await startTaskPipeline(system, {
    store,
    registry,
    owner: 'node-1',
    pollIntervalMs: 100,
    concurrency: 20,
    maxDemand: 100,
    backoff: { baseMs: 10, maxMs: 30 },
  });
  return store;
}

const succeeded = async (store: BullMQTaskStore) => (await store.counts()).find((c) => c.state === 'success')?.count ?? 0;

describe('task runner on the Redis (BullMQ) store', () => {
  it('runs every task exactly once, and retries a failing one until it fails for good', async () => {
    const runs = new Map<number, number>();
    let failures = 0;
    const registry = new TaskRegistry()
      .register('count', (n: number) => void runs.set(n, (runs.get(n) ?? 0) + 1))
      .register('fail', () => {
        failures++;
        throw new Error('always');
      });
    const store = await runner(registry, `sfbr${randomUUID().slice(0, 8)}`);
    const [bad] = await store.enqueue([{ name: 'fail', options: { maxAttempts: 3 } }]);
    await store.enqueue(Array.from({ length: 300 }, (_, n) => ({ name: 'count', args: n })));
    await waitFor(
      async () => (await succeeded(store)) === 300 && (await store.get(bad?.id as string))?.state === 'error',
      'the drain',
      30_000,
    );
    expect(runs.size).toBe(300);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(failures).toBe(3);
    expect(await store.get(bad?.id as string)).toMatchObject({ state: 'error', attempt: 3, lastError: 'always' });
  });

  it('runs jobs a plain BullMQ producer added: its data is the task args', async () => {
    const prefix = `sfbr${randomUUID().slice(0, 8)}`;
    const seen: unknown[] = [];
    const store = await runner(
      new TaskRegistry().register('greet', (args: unknown) => void seen.push(args)),
      prefix,
    );
    const { hostname, port } = new URL(url);
    const producer = new Queue('default', { prefix, connection: { host: hostname, port: Number(port) } });
    try {
      const job = await producer.add('greet', { who: 'Lucy' });
      await waitFor(async () => (await producer.getJobState(job.id as string)) === 'completed', 'the foreign job to complete');
      expect(seen).toEqual([{ who: 'Lucy' }]);
      expect((await store.get(`default/${job.id}`))?.state).toBe('success');
    } finally {
      await producer.close();
    }
  });

  it('a queue capped by BullMQ global concurrency gives claims no more than the cap, as BullMQ gives its own workers', async () => {
    const prefix = `sfbr${randomUUID().slice(0, 8)}`;
    const store = new BullMQTaskStore({ url, prefix });
    const { hostname, port } = new URL(url);
    const queue = new Queue('default', { prefix, connection: { host: hostname, port: Number(port) } });
    try {
      await store.enqueue(Array.from({ length: 5 }, (_, n) => ({ name: 'capped', args: n })));
      await queue.setGlobalConcurrency(2);
      const first = await store.claim('default', 5, 'node-1', 10_000);
      expect(first).toHaveLength(2);
      expect(await store.claim('default', 5, 'node-1', 10_000)).toEqual([]);
      const [done] = first;
      if (done === undefined) throw new Error('nothing was claimed');
      expect(await store.complete([{ id: done.id, attempt: done.attempt, claimant: done.claimant, status: 'success' }])).toEqual([done.id]);
      expect(await store.claim('default', 5, 'node-1', 10_000)).toHaveLength(1);
    } finally {
      await queue.close();
      await store.close();
    }
  });

  it('a child job of a BullMQ flow, run as a task, completes as BullMQ completes it: its parent is released', async () => {
    const prefix = `sfbr${randomUUID().slice(0, 8)}`;
    const store = new BullMQTaskStore({ url, prefix });
    const { hostname, port } = new URL(url);
    const connection = { host: hostname, port: Number(port) };
    const flows = new FlowProducer({ prefix, connection });
    const parents = new Queue('parents', { prefix, connection });
    try {
      const flow = await flows.add({
        name: 'report',
        queueName: 'parents',
        children: [{ name: 'greet', queueName: 'default', data: { who: 'Lucy' } }],
      });
      expect(await flow.job.getState()).toBe('waiting-children');
      const [child] = await store.claim('default', 1, 'node-1', 10_000);
      if (child === undefined) throw new Error('the child job was not claimed');
      expect(child.args).toEqual({ who: 'Lucy' });
      expect(await store.complete([{ id: child.id, attempt: child.attempt, claimant: child.claimant, status: 'success' }])).toEqual([
        child.id,
      ]);
      expect(await store.get(child.id)).toMatchObject({ state: 'success' });
      expect(await parents.getJobState(flow.job.id as string)).toBe('waiting');
    } finally {
      await flows.close();
      await parents.close();
      await store.close();
    }
  });
});
