import { PGliteTaskStore } from './pglite-task-store.js';
import { PostgresTaskStore } from './postgres-task-store.js';
import type { TaskStore } from './task-store.js';

export interface OpenTaskStoreOptions {
  /** postgres://… for PostgreSQL; absent for the embedded PGlite store. */
  readonly databaseUrl?: string | undefined;
  /** PGlite only: a folder to keep tasks in; in memory when absent. */
  readonly dataDir?: string | undefined;
  readonly schema?: string | undefined;
  readonly onError?: (error: Error) => void;
}

/** The store an agent or stagectl uses: PostgreSQL when a URL is given, else embedded PGlite. Migrated before it is returned. */
export async function openTaskStore(options: OpenTaskStoreOptions): Promise<TaskStore & { readonly kind: 'postgres' | 'pglite' }> {
  const common = { ...(options.schema === undefined ? {} : { schema: options.schema }) };
  const store =
    options.databaseUrl !== undefined && options.databaseUrl !== ''
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
