import { parseArgs } from 'node:util';
import { FabricError } from '@stagefabric/runtime';
import {
  type EnqueueOptions,
  FINAL_STATES,
  openTaskStore,
  type TaskEvent,
  type TaskFilter,
  type TaskState,
  type TaskStore,
} from '@stagefabric/tasks';
import { escapeControl } from './status.js';
import { enqueueFile } from './task-file.js';

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

/**
 * The store the command line names: --store, else PostgreSQL at DATABASE_URL,
 * else the embedded one at --data-dir. A failure in the background (a
 * connection dropped while `tasks watch` follows) is told on stderr.
 */
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
    onError: (error) => process.stderr.write(`stagectl: task store: ${error.message}\n`),
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

const BACKOFF_FLAG = /^(?:fixed:(?<delay>[^:]+)|exponential(?::(?<base>[^:]*)(?::(?<max>[^:]+))?)?)$/;

/**
 * `--backoff`: `fixed:MS`, `exponential`, `exponential:BASE_MS`,
 * `exponential:BASE_MS:MAX_MS` (`exponential::MAX_MS` keeps the base), or
 * the option as JSON. The store checks the numbers and names a bad one.
 */
export function parseBackoffFlag(text: string | undefined): EnqueueOptions['backoff'] {
  if (text === undefined) return undefined;
  if (text.trimStart().startsWith('{')) return parseJson('--backoff', text) as EnqueueOptions['backoff'];
  const m = BACKOFF_FLAG.exec(text)?.groups;
  if (m === undefined) throw new UsageError(`--backoff must be fixed:MS, exponential[:BASE_MS[:MAX_MS]] or a JSON object, got ${text}`);
  const ms = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  if (m.delay !== undefined) return { type: 'fixed', delayMs: ms(m.delay) as number };
  const baseMs = ms(m.base);
  const maxMs = ms(m.max);
  return { type: 'exponential', ...(baseMs === undefined ? {} : { baseMs }), ...(maxMs === undefined ? {} : { maxMs }) };
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
      'unique-for-ms': { type: 'string' },
      'run-at': { type: 'string' },
      backoff: { type: 'string' },
      'from-line': { type: 'string' },
    },
  });
  const runAt = values['run-at'] === undefined ? undefined : new Date(values['run-at']);
  if (runAt !== undefined && Number.isNaN(runAt.getTime()))
    throw new UsageError(`--run-at must be an ISO 8601 date, got ${values['run-at']}`);
  const fromLine = int('from-line', values['from-line']) ?? 1;
  if (fromLine < 1) throw new UsageError(`--from-line must be a line number (1 or more), got ${fromLine}`);
  const options: EnqueueOptions = Object.fromEntries(
    Object.entries({
      queue: values.queue,
      delayMs: int('delay-ms', values['delay-ms']),
      priority: int('priority', values.priority),
      maxAttempts: int('max-attempts', values['max-attempts']),
      timeoutMs: int('timeout-ms', values['timeout-ms']),
      uniqueKey: values['unique-key'],
      uniqueForMs: int('unique-for-ms', values['unique-for-ms']),
      runAt,
      backoff: parseBackoffFlag(values.backoff),
    }).filter(([, v]) => v !== undefined),
  );
  await withStore(values, async (store) => {
    if (values.file !== undefined) {
      const progress = process.stderr.isTTY === true;
      const done = await enqueueFile(store, values.file, options, fromLine, (n) => {
        if (progress) process.stderr.write(`\renqueued ${n}`);
      });
      if (progress) process.stderr.write('\n');
      const duplicates = done.duplicates === 0 ? '' : ` (${done.duplicates} duplicates of pending unique keys, nothing added for them)`;
      process.stdout.write(`enqueued ${done.enqueued} tasks${duplicates}\n`);
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

const describeFilter = (filter: TaskFilter) =>
  Object.entries(filter)
    .map(([k, v]) => `${k === 'errorContains' ? 'error' : k} ${JSON.stringify(v)}`)
    .join(', ');

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
  const filter: TaskFilter = {
    ...(values.queue === undefined ? {} : { queue: values.queue }),
    ...(values.state === undefined ? {} : { state: values.state as TaskState }),
    ...(values.name === undefined ? {} : { name: values.name }),
    ...(values.error === undefined ? {} : { errorContains: values.error }),
  };
  /** Retry and cancel by filter only with a filter: a bare `tasks retry` is a mistake, not "all". */
  const byFilter = (verb: string): TaskFilter => {
    if (Object.keys(filter).length === 0)
      throw new UsageError(`tasks ${verb}: give the ids of the tasks, or a filter (--queue, --state, --name, --error)`);
    return filter;
  };
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
          ...filter,
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
        if (ids.length === 0) {
          const n = await store.retryWhere(byFilter(verb));
          print({ retried: n, filter }, `retrying ${n} failed or cancelled tasks matching ${describeFilter(filter)}\n`);
          return;
        }
        const changed = await store.retry(ids);
        print(changed, `retrying ${changed.length} of ${ids.length} (only failed or cancelled tasks change)\n`);
        return;
      }
      case 'cancel': {
        if (ids.length === 0) {
          const n = await store.cancelWhere(byFilter(verb));
          print({ cancelled: n, filter }, `cancelled ${n} waiting tasks matching ${describeFilter(filter)}\n`);
          return;
        }
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
      case 'watch':
        await watch(store, values);
        return;
      default:
        throw new UsageError(`tasks: unknown action "${verb}" (counts, list, retry, cancel, pause, resume, watch)`);
    }
  });
}

const WATCH_NAMES_KEPT = 100_000;

/**
 * One event as `stagectl tasks watch` prints it: time, type, queue, id, then
 * what the event says (name, attempt, progress, why: `lease-lost` when a
 * lease expired, and the error), control characters escaped.
 */
export function renderTaskEvent(e: TaskEvent): string {
  const detail = [
    e.name,
    e.attempt === undefined || e.attempt === 0 ? undefined : `attempt ${e.attempt}`,
    e.progress === undefined ? undefined : `progress ${JSON.stringify(e.progress)}`,
    e.reason,
    e.error,
  ].filter((x) => x !== undefined);
  return `${escapeControl(`${new Date(e.at).toISOString()}  ${e.type.padEnd(9)}  ${e.queue}  ${e.id}  ${detail.join('  ')}`)}\n`;
}

/** Task lifecycle events as they happen, one line each, until Ctrl-C (or SIGTERM). */
async function watch(
  store: TaskStore,
  values: { queue?: string | undefined; name?: string | undefined; json?: boolean | undefined },
): Promise<void> {
  // A store whose later events carry no name (BullMQ): a task's name as its enqueued or started event told it, the newest kept.
  const names = new Map<string, string>();
  const matches = (e: TaskEvent): boolean => {
    if (values.queue !== undefined && e.queue !== values.queue) return false;
    if (values.name === undefined) return true;
    if (e.name !== undefined) {
      names.delete(e.id);
      names.set(e.id, e.name);
      if (names.size > WATCH_NAMES_KEPT) names.delete(names.keys().next().value as string);
    }
    return (e.name ?? names.get(e.id)) === values.name;
  };
  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    for await (const e of store.events({ signal: abort.signal })) {
      if (e.type !== 'overflow' && !matches(e)) continue;
      if (values.json) {
        process.stdout.write(`${JSON.stringify(e)}\n`);
      } else if (e.type === 'overflow') {
        process.stdout.write(`(${e.dropped} events dropped: the watch fell behind)\n`);
      } else {
        process.stdout.write(renderTaskEvent(e));
      }
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
