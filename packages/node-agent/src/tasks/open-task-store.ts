import { BullMQTaskStore } from './bullmq-task-store.js';
import { PGliteTaskStore } from './pglite-task-store.js';
import { PostgresTaskStore } from './postgres-task-store.js';
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
  readonly onError?: (error: Error) => void;
}

/** The store an agent or stagectl uses: PostgreSQL when a URL is given, else embedded PGlite, or BullMQ when asked. Migrated before it is returned. */
export async function openTaskStore(options: OpenTaskStoreOptions): Promise<TaskStore & { readonly kind: TaskStoreKind }> {
  const common = { ...(options.schema === undefined ? {} : { schema: options.schema }) };
  if (options.kind === 'bullmq') {
    if (options.redisUrl === undefined || options.redisUrl === '') throw new TaskStoreConfigError('the bullmq task store needs REDIS_URL');
    const store = Object.assign(new BullMQTaskStore({ url: options.redisUrl }), { kind: 'bullmq' as const });
    await store.migrate();
    return store;
  }
  if (options.kind === 'postgres' && (options.databaseUrl === undefined || options.databaseUrl === '')) {
    throw new TaskStoreConfigError('the postgres task store needs DATABASE_URL');
  }
  const store =
    options.kind !== 'pglite' && options.databaseUrl !== undefined && options.databaseUrl !== ''
      ? Object.assign(
          new PostgresTaskStore({
            url: options.databaseUrl,
            ...common,
            ...(options.onError === undefined ? {} : { onError: options.onError }),
          }),
          {
            kind: 'postgres' as const,
          },
        )
      : Object.assign(new PGliteTaskStore({ ...common, ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }) }), {
          kind: 'pglite' as const,
        });
  try {
    await store.migrate();
  } catch (error) {
    await store.close().catch(() => {});
    throw error;
  }
  return store;
}

/** A store asked for without what it needs (a URL). */
export class TaskStoreConfigError extends Error {
  override readonly name = 'TaskStoreConfigError';
  readonly code = 'SF_BAD_OPTION';
}
