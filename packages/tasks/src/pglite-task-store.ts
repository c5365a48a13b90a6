import { PGlite } from '@electric-sql/pglite';
import { type Query, SqlTaskStore, type SqlTaskStoreOptions } from './sql-task-store.js';

export interface PGliteTaskStoreOptions extends SqlTaskStoreOptions {
  /** A folder to keep the database in; in memory when absent. */
  readonly dataDir?: string;
}

const queryOf =
  (db: { query: PGlite['query'] }): Query =>
  async <R>(text: string, params?: readonly unknown[]) =>
    (await db.query<R>(text, params as unknown[])).rows;

/** The task store on embedded PostgreSQL (PGlite): the default when no DATABASE_URL is set. Same SQL as Postgres. */
export class PGliteTaskStore extends SqlTaskStore {
  readonly db: PGlite;

  constructor(options: PGliteTaskStoreOptions = {}) {
    const db = new PGlite(options.dataDir);
    super(
      {
        query: queryOf(db),
        transaction: (fn) => db.transaction((tx) => fn(queryOf(tx))),
        listen: async (channel, cb) => db.listen(channel, cb),
        close: () => db.close(),
      },
      options,
    );
    this.db = db;
  }
}
