import { afterEach, describe, expect, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import { waitFor } from '../../../test/support/wait-for.js';
import {
  defineTask,
  enqueueTasks,
  startLater,
  startTaskWorker,
  TaskArgsError,
  TaskRegistry,
  type TaskStore,
  type TaskWorker,
} from '../src/index.js';

/**
 * Typed tasks against one store: a schema checks args at enqueue (nothing of
 * a bad batch stored) and again at run (a task from an unchecked producer
 * fails for good, naming the field), and the handler gets the schema's output.
 */
export function typedTaskSuite(label: string, open: () => Promise<TaskStore>): void {
  // An embedded PGlite store takes many seconds to start on a loaded machine, one per test.
  describe(`typed tasks on ${label}`, { timeout: 90_000 }, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });

    const email = z.object({ to: z.email(), copies: z.number().int().min(1).default(1), tags: z.array(z.string()).optional() });

    async function worker(registry: TaskRegistry<object>): Promise<{ store: TaskStore; worker: TaskWorker }> {
      const store = await open();
      cleanups.push(() => store.close());
      const w = await startTaskWorker({ store, handlers: registry, pollIntervalMs: 20, backoff: { baseMs: 10, maxMs: 20 } });
      cleanups.push(() => w.stop());
      return { store, worker: w };
    }

    it('refuses a batch with one bad payload, naming the task and the field, and stores none of it', async () => {
      const ran: unknown[] = [];
      const registry = new TaskRegistry()
        .register('send-email', { schema: email, handler: (args) => void ran.push(args) })
        .register('log', (args: unknown) => void ran.push(args));
      const store = await open();
      cleanups.push(() => store.close());
      const refused = await enqueueTasks(store, registry, [
        { name: 'send-email', args: { to: 'ann@example.com' } },
        { name: 'log', args: 'anything' },
        { name: 'send-email', args: { to: 'bob@example.com', tags: ['a', 7 as unknown as string] } },
      ]).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(TaskArgsError);
      expect(refused).toMatchObject({ code: 'SF_BAD_TASK_ARGS', task: 'send-email', issues: [{ path: 'args.tags[1]' }] });
      expect((refused as Error).message).toMatch(/^task 2 \(send-email\): args do not match the schema of "send-email": args\.tags\[1\]: /);
      expect(await store.list({})).toEqual([]);
    });

    it('runs a typed task with the schema output (defaults applied) and stores the args as given', async () => {
      const ran: { to: string; copies: number }[] = [];
      const sendEmail = defineTask('send-email', {
        schema: email,
        handler: (args) => {
          expectTypeOf(args).toEqualTypeOf<{ to: string; copies: number; tags?: string[] | undefined }>();
          ran.push(args);
        },
      });
      const registry = new TaskRegistry().register(sendEmail);
      const { store } = await worker(registry);
      const [queued] = await enqueueTasks(store, registry, [{ name: 'send-email', args: { to: 'ann@example.com' } }]);
      const { id } = await startLater(store, sendEmail, { to: 'bob@example.com', copies: 2 });
      await waitFor(async () => (await store.get(id))?.state === 'success' && ran.length === 2, 'both typed tasks to succeed');
      expect(ran).toEqual(
        expect.arrayContaining([
          { to: 'ann@example.com', copies: 1 },
          { to: 'bob@example.com', copies: 2 },
        ]),
      );
      expect((await store.get(queued?.id as string))?.args).toEqual({ to: 'ann@example.com' });
      await expect(startLater(store, sendEmail, { to: 'not an address' })).rejects.toThrow(/task 0 \(send-email\).*args\.to: /);
    });

    it('waits for an async schema and refuses what it refuses', async () => {
      const taken = new Set(['taken']);
      const signup = defineTask('signup', {
        schema: z.object({ user: z.string().refine(async (u) => !taken.has(u), 'is taken') }),
        handler: () => {},
      });
      const registry = new TaskRegistry().register(signup);
      const store = await open();
      cleanups.push(() => store.close());
      await expect(enqueueTasks(store, registry, [{ name: 'signup', args: { user: 'taken' } }])).rejects.toThrow(
        'task 0 (signup): args do not match the schema of "signup": args.user: is taken',
      );
      expect(await store.list({})).toEqual([]);
      expect(await enqueueTasks(store, registry, [{ name: 'signup', args: { user: 'free' } }])).toHaveLength(1);
    });

    it('fails a task from an unchecked producer for good, naming the field, and runs on', async () => {
      const ran: string[] = [];
      const registry = new TaskRegistry().register('send-email', { schema: email, handler: (args) => void ran.push(args.to) });
      const { store } = await worker(registry);
      // Another service, or stagectl enqueue: the store alone checks nothing about the schema.
      const [bad] = await store.enqueue([{ name: 'send-email', args: { to: 42 }, options: { maxAttempts: 3 } }]);
      await waitFor(async () => (await store.get(bad?.id as string))?.state === 'error', 'the bad task to fail');
      const record = await store.get(bad?.id as string);
      expect(record?.lastError).toMatch(/^task \S+ \(send-email\), attempt 1: args do not match the schema of "send-email": args\.to: /);
      expect((await store.attempts(bad?.id as string)).map((a) => a.outcome)).toEqual(['error']);
      const { id } = await startLater(store, 'send-email', { to: 'ann@example.com' });
      await waitFor(async () => (await store.get(id))?.state === 'success', 'a good task after it to succeed');
      expect(ran).toEqual(['ann@example.com']);
    });
  });
}

/** Compiled by `npx tsc -p test`, never called: what the types accept and refuse. */
export function typedTaskTypes(store: TaskStore): void {
  const schema = z.object({ to: z.string(), copies: z.number().default(1) });
  const registry = new TaskRegistry().register('send-email', { schema, handler: () => {} }).register('plain', () => {});
  expectTypeOf(registry.argsByName).toEqualTypeOf<
    ({ 'send-email': { to: string; copies?: number | undefined } } & { plain: unknown }) | undefined
  >();
  void enqueueTasks(store, registry, [{ name: 'send-email', args: { to: 'a' } }, { name: 'plain' }]);
  // @ts-expect-error copies must be a number
  void enqueueTasks(store, registry, [{ name: 'send-email', args: { to: 'a', copies: 'two' } }]);
  // @ts-expect-error to is required
  void enqueueTasks(store, registry, [{ name: 'send-email', args: {} }]);
  // @ts-expect-error no handler of that name in this registry
  void enqueueTasks(store, registry, [{ name: 'sned-email', args: { to: 'a' } }]);
  const sendEmail = defineTask('send-email', { schema, handler: (args) => expectTypeOf(args.copies).toEqualTypeOf<number>() });
  void startLater(store, sendEmail, { to: 'a' });
  void startTaskWorker({ store, handlers: { 'send-email': sendEmail, other: { schema, handler: (args) => args.to }, plain: () => {} } });
  // @ts-expect-error to must be a string
  void startLater(store, sendEmail, { to: 1 });
  // @ts-expect-error the handler's args are the schema's output
  defineTask('wrong', { schema, handler: (args: { to: number }) => args });
}
