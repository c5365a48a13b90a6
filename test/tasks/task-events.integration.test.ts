import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { TaskEvent, TaskStore } from '@stagefabric/tasks';
import { BullMQTaskStore } from '@stagefabric/tasks/bullmq';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import {
  eventsSent,
  eventsWhenFollowedConformance,
  follow,
  type RawListen,
  taskEventsConformance,
} from '../../packages/tasks/test/task-events.conformance.js';
import { waitFor } from '../support/wait-for.js';

const databaseUrl = inject('databaseUrl');
const redisUrl = inject('redisUrl');
const ROOT = join(import.meta.dirname, '../..');
const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');

const schemas: string[] = [];
const schemaOf = new WeakMap<object, string>();
async function makePostgres() {
  const schema = `sf_e${randomUUID().slice(0, 8)}`;
  schemas.push(schema);
  const store = new PostgresTaskStore({ url: databaseUrl, schema });
  schemaOf.set(store, schema);
  await store.migrate();
  return store;
}
const pgPeer = async (store: TaskStore) => new PostgresTaskStore({ url: databaseUrl, schema: schemaOf.get(store) as string });

const prefixOf = new WeakMap<object, string>();
async function makeBullMQ() {
  const prefix = `sfev${randomUUID().slice(0, 8)}`;
  const store = new BullMQTaskStore({ url: redisUrl, prefix });
  prefixOf.set(store, prefix);
  await store.migrate();
  return store;
}
const bullPeer = async (store: TaskStore) => new BullMQTaskStore({ url: redisUrl, prefix: prefixOf.get(store) as string });

taskEventsConformance('PostgreSQL', makePostgres, pgPeer);
taskEventsConformance('Redis through BullMQ', makeBullMQ, bullPeer);
const pgListen: RawListen = async (store, channel, push) => {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  client.on('notification', (n) => push(n.payload ?? ''));
  await client.query(`LISTEN "${schemaOf.get(store)}_${channel}"`);
  return () => client.end();
};
eventsWhenFollowedConformance('PostgreSQL', makePostgres, pgListen);

describe('events followers (PostgreSQL)', () => {
  /** When each follower registered in the store counts as following until. */
  async function followers(schema: string): Promise<{ expires: Date; live: boolean }[]> {
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    try {
      return (await admin.query(`SELECT expires_at AS expires, expires_at > now() AS live FROM ${schema}.event_followers`)).rows;
    } finally {
      await admin.end();
    }
  }

  it('a follower following longer than its time to live renews itself and keeps getting every event', async () => {
    const store = await makePostgres();
    const schema = schemaOf.get(store) as string;
    const watcher = new PostgresTaskStore({ url: databaseUrl, schema, followerTtlMs: 300 });
    const f = await follow(watcher, store);
    const heard = await eventsSent(store, pgListen);
    try {
      const [first] = await followers(schema);
      if (first === undefined) throw new Error('the follower is not registered');
      // Renewed for longer than three times its time to live.
      await waitFor(async () => ((await followers(schema))[0]?.expires.getTime() ?? 0) > first.expires.getTime() + 900, 'the renewals');
      const id = await heard.run('renewed');
      await waitFor(() => f.seen.some((e) => e.type === 'succeeded' && e.id === id), 'the follower to get the success');
      expect(heard.sent.filter((e) => e.id === id).map((e) => e.type)).toEqual(['enqueued', 'started', 'progress', 'succeeded']);
    } finally {
      await f.stop();
      await heard.stop();
      await watcher.close();
      await store.close();
    }
  });

  it('a follower killed with SIGKILL stops counting once its time to live has passed, and no event is sent after', async () => {
    const store = await makePostgres();
    const schema = schemaOf.get(store) as string;
    const child = spawn(process.execPath, [join(import.meta.dirname, 'events-follower-child.mjs'), databaseUrl, schema, '600'], {
      cwd: ROOT,
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((resolve) => child.on('close', resolve));
    const heard = await eventsSent(store, pgListen);
    try {
      await waitFor(() => out.includes('following'), 'the child to follow');
      expect((await followers(schema)).map((r) => r.live)).toEqual([true]);
      await heard.run('followed');
      expect(heard.sent.length).toBeGreaterThan(0);
      child.kill('SIGKILL');
      await exited;
      await waitFor(async () => (await followers(schema)).every((r) => !r.live), 'the killed follower to expire', 5_000);
      const before = heard.sent.length;
      await heard.run('after');
      expect(heard.sent.length).toBe(before);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await heard.stop();
      await store.close();
    }
  });
});

afterAll(async () => {
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`).catch(() => {});
  await admin.end();
});

/** `stagectl tasks watch --json` in a process of its own; its lines parsed as they come. */
function watch(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [STAGECTL, 'tasks', 'watch', '--json', ...args], { cwd: ROOT, env: { ...process.env, ...env } });
  const lines: TaskEvent[] = [];
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const parts = out.split('\n');
    out = parts.pop() ?? '';
    for (const p of parts) if (p.trim() !== '') lines.push(JSON.parse(p) as TaskEvent);
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, lines, stderr: () => err, exited };
}

describe('stagectl tasks watch', () => {
  const children: ChildProcessWithoutNullStreams[] = [];
  const stores: TaskStore[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
    for (const s of stores.splice(0)) await s.close();
  });

  it('tells on stderr when the connection it listens on is cut, and prints events again once it has reconnected (postgres)', async () => {
    const store = await makePostgres();
    stores.push(store);
    const schema = schemaOf.get(store) as string;
    const queue = `cut-${randomUUID().slice(0, 8)}`;
    const w = watch(['--schema', schema, '--queue', queue], { DATABASE_URL: databaseUrl });
    children.push(w.child);
    const shows = async (marker: string) =>
      waitFor(async () => {
        await store.enqueue([{ name: marker, options: { queue } }]);
        return w.lines.some((e) => e.name === marker);
      }, `stagectl tasks watch to print ${marker} (stderr: ${w.stderr()})`);
    await shows('before');
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    try {
      const cut = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1', [
        `LISTEN "${schema}_events"`,
      ]);
      expect(cut.rowCount).toBe(1);
    } finally {
      await admin.end();
    }
    await waitFor(() => /^stagectl: task store: terminating connection/m.test(w.stderr()), 'the cut told on stderr');
    await shows('after');
    expect(w.child.exitCode).toBeNull();
  });

  for (const kind of ['postgres', 'bullmq'] as const) {
    it(`prints the events of tasks enqueued and run by another process, one JSON line each, until interrupted (${kind})`, async () => {
      const queue = `watched-${randomUUID().slice(0, 8)}`;
      let store: TaskStore;
      let env: Record<string, string>;
      let args: string[];
      if (kind === 'postgres') {
        store = await makePostgres();
        env = { DATABASE_URL: databaseUrl };
        args = ['--schema', schemaOf.get(store) as string, '--queue', queue, '--name', 'report'];
      } else {
        // stagectl reaches BullMQ's default prefix: the queue of this test's own keeps it apart from other tests.
        store = new BullMQTaskStore({ url: redisUrl });
        await store.migrate();
        env = { REDIS_URL: redisUrl };
        args = ['--store', 'bullmq', '--queue', queue, '--name', 'report'];
      }
      stores.push(store);
      const w = watch(args, env);
      children.push(w.child);
      // The watch is following once a task of its queue shows (tasks enqueued before it subscribed are not replayed).
      await waitFor(async () => {
        await store.enqueue([{ name: 'report', args: { probe: true }, options: { queue, priority: 5 } }]);
        return w.lines.some((e) => e.type === 'enqueued');
      }, `stagectl tasks watch to follow (stderr: ${w.stderr()})`);
      await store.enqueue([
        { name: 'report', options: { queue: `${queue}-not-watched` } },
        { name: 'other-name', options: { queue, priority: -2 } },
        { name: 'report', args: { month: 11 }, options: { queue, priority: -1 } },
      ]);
      const [other, claim] = await store.claim(queue, 2, 'node-x', 30_000);
      expect([other?.name, claim?.name]).toEqual(['other-name', 'report']);
      if (other !== undefined) await store.complete([{ ...other, status: 'success' }]);
      if (claim === undefined) return;
      await store.progress(claim, 75);
      await store.complete([{ ...claim, status: 'success' }]);
      await waitFor(() => w.lines.some((e) => e.id === claim.id && e.type === 'succeeded'), 'the watch to print the success');
      expect(w.lines.filter((e) => e.id === claim.id).map((e) => e.type)).toEqual(['enqueued', 'started', 'progress', 'succeeded']);
      expect(w.lines.find((e) => e.id === claim.id && e.type === 'progress')?.progress).toBe(75);
      // Only its queue and its handler's tasks: on BullMQ the success carries no name, the watch knows it from the start.
      expect(w.lines.every((e) => e.queue === queue)).toBe(true);
      expect(w.lines.some((e) => e.id === other?.id)).toBe(false);
      w.child.kill('SIGINT');
      expect(await w.exited).toBe(0);
    });
  }
});
