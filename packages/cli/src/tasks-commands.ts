import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { FabricError } from '@stagefabric/runtime';
import { type EnqueueOptions, FINAL_STATES, type NewTask, openTaskStore, type TaskState, type TaskStore } from '@stagefabric/tasks';

/** A command line stagectl cannot run: exit 2. */
export class UsageError extends FabricError {
  override readonly name = 'UsageError';

  constructor(message: string) {
    super('SF_BAD_USAGE', message);
  }
}

export const STORE_OPTIONS = { 'data-dir': { type: 'string' }, schema: { type: 'string' }, store: { type: 'string' } } as const;

export interface StoreValues {
  'data-dir'?: string | undefined;
  schema?: string | undefined;
  store?: string | undefined;
}

/** The store the command line names: --store, else PostgreSQL at DATABASE_URL, else the embedded one at --data-dir. */
export async function openStoreFor(values: StoreValues): Promise<TaskStore> {
  const kind = values.store;
  if (kind !== undefined && kind !== 'postgres' && kind !== 'pglite' && kind !== 'bullmq') {
    throw new UsageError(`--store must be postgres, pglite or bullmq, got ${kind}`);
  }
  const databaseUrl = process.env.DATABASE_URL;
  if (kind !== 'bullmq' && (databaseUrl === undefined || databaseUrl === '') && values['data-dir'] === undefined) {
    throw new UsageError(
      'set DATABASE_URL to reach the task store (or --data-dir DIR for an embedded one no agent is using, or --store bullmq with REDIS_URL)',
    );
  }
  return openTaskStore({
    kind,
    databaseUrl,
    redisUrl: process.env.REDIS_URL,
    dataDir: values['data-dir'],
    schema: values.schema,
  });
}

async function withStore<T>(values: StoreValues, fn: (store: TaskStore) => Promise<T>): Promise<T> {
  const store = await openStoreFor(values);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const int = (name: string, value: string | undefined): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n)) throw new UsageError(`--${name} must be an integer, got ${value}`);
  return n;
};

function parseJson(what: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${what} is not JSON: ${(error as Error).message}`);
  }
}

/** Tasks from a file or stdin, one JSON object `{ name, args?, options? }` per line. */
async function* readTasks(path: string): AsyncGenerator<NewTask> {
  const lines = createInterface({ input: path === '-' ? process.stdin : createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY });
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    const task = parseJson(`${path === '-' ? 'stdin' : path} line ${n}`, line) as NewTask;
    if (typeof task !== 'object' || task === null || typeof task.name !== 'string') {
      throw new UsageError(`${path === '-' ? 'stdin' : path} line ${n}: expected {"name": "...", "args": ..., "options": {...}}`);
    }
    yield task;
  }
}

export async function enqueueCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...STORE_OPTIONS,
      args: { type: 'string' },
      file: { type: 'string' },
      queue: { type: 'string' },
      'delay-ms': { type: 'string' },
      priority: { type: 'string' },
      'max-attempts': { type: 'string' },
      'timeout-ms': { type: 'string' },
      'unique-key': { type: 'string' },
    },
  });
  const options: EnqueueOptions = Object.fromEntries(
    Object.entries({
      queue: values.queue,
      delayMs: int('delay-ms', values['delay-ms']),
      priority: int('priority', values.priority),
      maxAttempts: int('max-attempts', values['max-attempts']),
      timeoutMs: int('timeout-ms', values['timeout-ms']),
      uniqueKey: values['unique-key'],
    }).filter(([, v]) => v !== undefined),
  );
  await withStore(values, async (store) => {
    if (values.file !== undefined) {
      const progress = process.stderr.isTTY === true;
      let batch: NewTask[] = [];
      let total = 0;
      const flush = async () => {
        await store.enqueue(batch);
        total += batch.length;
        batch = [];
        if (progress) process.stderr.write(`\renqueued ${total}`);
      };
      for await (const task of readTasks(values.file)) {
        batch.push({ ...task, options: { ...options, ...(task.options ?? {}) } });
        if (batch.length === 1000) await flush();
      }
      if (batch.length > 0) await flush();
      if (progress) process.stderr.write('\n');
      process.stdout.write(`enqueued ${total} tasks\n`);
      return;
    }
    const name = positionals[0];
    if (name === undefined) throw new UsageError('enqueue: missing NAME (or --file FILE, - for stdin)');
    const taskArgs = values.args === undefined ? null : parseJson('--args', values.args);
    const [result] = await store.enqueue([{ name, args: taskArgs, options }]);
    process.stdout.write(
      result?.duplicate ? `duplicate of task ${result.id}, still pending: nothing added\n` : `enqueued task ${result?.id}\n`,
    );
  });
}

export async function migrateCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: STORE_OPTIONS });
  await withStore(values, async () => {
    process.stdout.write('task store schema is up to date\n');
  });
}

const STATES: readonly TaskState[] = ['waiting', 'running', ...FINAL_STATES];

export async function tasksCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...STORE_OPTIONS,
      json: { type: 'boolean' },
      queue: { type: 'string' },
      state: { type: 'string' },
      name: { type: 'string' },
      error: { type: 'string' },
      limit: { type: 'string' },
      offset: { type: 'string' },
    },
  });
  const [verb = 'counts', ...ids] = positionals;
  if (values.state !== undefined && !(STATES as readonly string[]).includes(values.state)) {
    throw new UsageError(`--state must be one of ${STATES.join(', ')}, got ${values.state}`);
  }
  await withStore(values, async (store) => {
    const print = (data: unknown, text: string) => process.stdout.write(values.json ? `${JSON.stringify(data, null, 2)}\n` : text);
    switch (verb) {
      case 'counts': {
        const counts = await store.counts();
        const queues = [...new Set(counts.map((c) => c.queue))];
        const rows = queues.map((q) => [q, ...STATES.map((s) => String(counts.find((c) => c.queue === q && c.state === s)?.count ?? 0))]);
        const header = ['QUEUE', ...STATES.map((s) => s.toUpperCase())];
        const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
        const line = (r: string[]) =>
          r
            .map((c, i) => c.padEnd(widths[i] ?? 0))
            .join('  ')
            .trimEnd();
        print(counts, `${[header, ...rows].map(line).join('\n')}\n`);
        return;
      }
      case 'list': {
        const tasks = await store.list({
          ...(values.queue === undefined ? {} : { queue: values.queue }),
          ...(values.state === undefined ? {} : { state: values.state as TaskState }),
          ...(values.name === undefined ? {} : { name: values.name }),
          ...(values.error === undefined ? {} : { errorContains: values.error }),
          limit: int('limit', values.limit) ?? 50,
          offset: int('offset', values.offset) ?? 0,
        });
        print(
          tasks,
          `${tasks.map((t) => `${t.id}\t${t.queue}\t${t.name}\t${t.state}\tattempt ${t.attempt}/${t.maxAttempts}${t.lastError === null ? '' : `\t${t.lastError}`}`).join('\n')}\n`,
        );
        return;
      }
      case 'retry': {
        if (ids.length === 0) throw new UsageError(`tasks ${verb}: give the ids of the tasks`);
        const changed = await store.retry(ids);
        print(changed, `retrying ${changed.length} of ${ids.length} (only failed or cancelled tasks change)\n`);
        return;
      }
      case 'cancel': {
        if (ids.length === 0) throw new UsageError(`tasks ${verb}: give the ids of the tasks`);
        const waiting = await store.cancel(ids);
        const running = await store.cancelRunning(ids.filter((id) => !waiting.includes(id)));
        const changed = [...waiting, ...running];
        const aborted = running.length === 0 ? '' : `; ${running.length} running: aborted at their next lease extension`;
        print(changed, `cancelled ${changed.length} of ${ids.length} (only waiting and running tasks change${aborted})\n`);
        return;
      }
      case 'pause':
      case 'resume': {
        const [queue] = ids;
        if (queue === undefined || ids.length !== 1) throw new UsageError(`tasks ${verb}: give one queue`);
        if (verb === 'pause') await store.pause(queue);
        else await store.resume(queue);
        const paused = await store.paused();
        print(
          { queue, paused: paused.includes(queue) },
          verb === 'pause' ? `queue ${queue} paused: claims take nothing from it\n` : `queue ${queue} resumed\n`,
        );
        return;
      }
      default:
        throw new UsageError(`tasks: unknown action "${verb}" (counts, list, retry, cancel, pause, resume)`);
    }
  });
}
