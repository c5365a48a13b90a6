import { backoffMs, FabricError } from '@stagefabric/runtime';
import type { SqlTaskStore } from './sql-task-store.js';
import type { TaskStore } from './task-store.js';

export type TaskStoreKind = 'postgres' | 'pglite' | 'bullmq';

export interface OpenTaskStoreOptions {
  /** Which store; default postgres when databaseUrl is given, else pglite. */
  readonly kind?: TaskStoreKind | undefined;
  /** bullmq: the Redis holding the queues. */
  readonly redisUrl?: string | undefined;
  /** postgres://… for PostgreSQL; absent for the embedded PGlite store. */
  readonly databaseUrl?: string | undefined;
  /** PGlite only: a folder to keep tasks in; in memory when absent. */
  readonly dataDir?: string | undefined;
  readonly schema?: string | undefined;
  /** bullmq: the Redis key prefix of the queues. Default bull. */
  readonly prefix?: string | undefined;
  readonly onError?: (error: Error) => void;
  /**
   * PostgreSQL: how long to keep trying while the server cannot be reached
   * (it is starting or restarting, the network is healing) before giving up.
   * Default 0: fail at once, as a one-shot command should.
   */
  readonly connectTimeoutMs?: number;
  /** Called before each new try while the server cannot be reached. */
  readonly onUnreachable?: (error: Error, retryInMs: number) => void;
}

/** Failures to reach a PostgreSQL server, as opposed to failures of what was asked of it. */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENOTFOUND',
  'EPIPE',
  // PostgreSQL: shutting down, starting up, or a connection exception.
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
]);

function isUnreachable(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && UNREACHABLE_CODES.has(code)) return true;
  return typeof message === 'string' && /^Connection terminated|timeout exceeded when trying to connect/.test(message);
}

/** Migrates, trying again with backoff while the server cannot be reached, up to `connectTimeoutMs`. */
async function migrateWhenReachable(store: TaskStore, options: OpenTaskStoreOptions): Promise<void> {
  const deadline = Date.now() + (options.connectTimeoutMs ?? 0);
  for (let attempt = 0; ; attempt++) {
    const delay = backoffMs(attempt, { baseMs: 250, maxMs: 5000 });
    try {
      await store.migrate();
      return;
    } catch (error) {
      if (!isUnreachable(error) || Date.now() + delay > deadline) throw error;
      options.onUnreachable?.(error as Error, delay);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * The store an agent or stagectl uses: PostgreSQL when a URL is given, else
 * embedded PGlite, or BullMQ when asked. Migrated before it is returned; a
 * PostgreSQL server that cannot be reached yet is waited for up to
 * `connectTimeoutMs`.
 */
export async function openTaskStore(options: OpenTaskStoreOptions): Promise<TaskStore & { readonly kind: TaskStoreKind }> {
  const onError = options.onError === undefined ? {} : { onError: options.onError };
  const common = { ...(options.schema === undefined ? {} : { schema: options.schema }), ...onError };
  if (options.kind === 'bullmq') {
    if (options.redisUrl === undefined || options.redisUrl === '') throw new TaskStoreConfigError('the bullmq task store needs REDIS_URL');
    // Each store's driver is an optional peer dependency: loaded only when that store is asked for.
    const { BullMQTaskStore } = await import('./bullmq-task-store.js');
    const store = Object.assign(
      new BullMQTaskStore({
        url: options.redisUrl,
        ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
        ...onError,
      }),
      { kind: 'bullmq' as const },
    );
    try {
      // One-shot commands give up soon; an agent waits as long as it would for PostgreSQL.
      await store.migrate(Math.max(5000, options.connectTimeoutMs ?? 0));
    } catch (error) {
      await store.close().catch(() => {});
      throw error;
    }
    return store;
  }
  if (options.kind === 'postgres' && (options.databaseUrl === undefined || options.databaseUrl === '')) {
    throw new TaskStoreConfigError('the postgres task store needs DATABASE_URL');
  }
  const usePostgres = options.kind !== 'pglite' && options.databaseUrl !== undefined && options.databaseUrl !== '';
  let store: SqlTaskStore & { readonly kind: TaskStoreKind };
  if (usePostgres) {
    const { PostgresTaskStore } = await import('./postgres-task-store.js');
    store = Object.assign(
      new PostgresTaskStore({
        url: options.databaseUrl as string,
        ...common,
      }),
      { kind: 'postgres' as const },
    );
  } else {
    const { PGliteTaskStore } = await import('./pglite-task-store.js');
    store = Object.assign(new PGliteTaskStore({ ...common, ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }) }), {
      kind: 'pglite' as const,
    });
  }
  try {
    await migrateWhenReachable(store, options);
  } catch (error) {
    await store.close().catch(() => {});
    throw error;
  }
  return store;
}

/** A store asked for without what it needs (a URL). */
export class TaskStoreConfigError extends FabricError {
  override readonly name = 'TaskStoreConfigError';

  constructor(message: string) {
    super('SF_BAD_OPTION', message);
  }
}
