import { backoffMs } from '@stagefabric/runtime';
import pg from 'pg';
import { type Query, type SqlDriver, SqlTaskStore, type SqlTaskStoreOptions } from './sql-task-store.js';

export interface PostgresTaskStoreOptions extends SqlTaskStoreOptions {
  readonly url: string;
  /** Connections in the pool. Default 10. */
  readonly poolSize?: number;
}

/** Wraps a pg client or pool as the store's query function. */
export function pgQuery(client: pg.Pool | pg.PoolClient | pg.Client): Query {
  return async <R>(text: string, params?: readonly unknown[]) => (await client.query(text, params as unknown[])).rows as R[];
}

/** Most statements a store prepares; any beyond (there are a few dozen) run unprepared. */
const PREPARED_MAX = 256;

/**
 * The pool as the store's query function, each statement prepared: a
 * connection parses and plans it once, then only binds and executes it.
 */
function preparedQuery(pool: pg.Pool): Query {
  const names = new Map<string, string>();
  return async <R>(text: string, params?: readonly unknown[]) => {
    let name = names.get(text);
    if (name === undefined && names.size < PREPARED_MAX) {
      name = `stagefabric_${names.size}`;
      names.set(text, name);
    }
    const config: pg.QueryConfig = { text, values: (params ?? []) as unknown[] };
    if (name !== undefined) config.name = name;
    return (await pool.query(config)).rows as R[];
  };
}

/**
 * LISTEN needs a connection of its own that outlives any query. When it
 * drops, it is made again; notifications missed meanwhile are covered by the
 * producers' poll.
 */
function listener(url: string, onError: (error: Error) => void) {
  const channels = new Map<string, Set<(payload: string) => void>>();
  let client: pg.Client | undefined;
  let connecting: Promise<pg.Client> | undefined;
  let closed = false;
  const connect = (): Promise<pg.Client> => {
    connecting ??= (async () => {
      for (let attempt = 0; ; attempt++) {
        const c = new pg.Client({ connectionString: url });
        try {
          await c.connect();
          c.on('notification', (n) => {
            for (const cb of channels.get(n.channel) ?? []) cb(n.payload ?? '');
          });
          c.on('error', (error) => {
            onError(error);
            if (client === c) client = undefined;
            connecting = undefined;
            if (!closed && channels.size > 0) void connect();
          });
          for (const channel of channels.keys()) await c.query(`LISTEN "${channel}"`);
          client = c;
          return c;
        } catch (error) {
          onError(error as Error);
          await c.end().catch(() => {});
          if (closed) throw error;
          await new Promise((r) => setTimeout(r, backoffMs(attempt, { baseMs: 100, maxMs: 2000 })));
        }
      }
    })();
    return connecting;
  };
  return {
    async listen(channel: string, cb: (payload: string) => void): Promise<() => Promise<void>> {
      const fresh = !channels.has(channel);
      const set = channels.get(channel) ?? new Set<(payload: string) => void>();
      channels.set(channel, set);
      set.add(cb);
      const c = client ?? (await connect());
      if (fresh && c === client) await c.query(`LISTEN "${channel}"`);
      return async () => {
        set.delete(cb);
        if (set.size === 0) {
          channels.delete(channel);
          await client?.query(`UNLISTEN "${channel}"`).catch(() => {});
        }
      };
    },
    async close(): Promise<void> {
      closed = true;
      await client?.end().catch(() => {});
    },
  };
}

/** The task store on PostgreSQL through `pg`. */
export class PostgresTaskStore extends SqlTaskStore {
  readonly pool: pg.Pool;

  constructor(options: PostgresTaskStoreOptions) {
    const onError = options.onError ?? (() => {});
    const pool = new pg.Pool({ connectionString: options.url, max: options.poolSize ?? 10 });
    // A client that loses its connection must not crash the process: an idle one is reported by the pool (which
    // replaces it), and one checked out (in a transaction) reports on itself when the server goes after its query failed.
    pool.on('error', onError);
    pool.on('connect', (client) => client.on('error', onError));
    const notifications = listener(options.url, onError);
    const driver: SqlDriver = {
      query: preparedQuery(pool),
      async transaction(fn) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          const result = await fn(pgQuery(client));
          await client.query('COMMIT');
          return result;
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {});
          throw error;
        } finally {
          client.release();
        }
      },
      listen: (channel, cb) => notifications.listen(channel, cb),
      async close() {
        await notifications.close();
        await pool.end();
      },
    };
    super(driver, options);
    this.pool = pool;
  }
}
