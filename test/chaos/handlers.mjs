// The chaos run's task handler. Each run that succeeds writes a row to the
// run's own table in the same transaction that records the task's success
// (ctx.succeedWith), so the table holds one row per success: a run that lost
// its lease (its node was paused or cut off) rolls back instead.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

const schema = process.env.CHAOS_SCHEMA;
const node = process.env.STAGEFABRIC_NODE ?? '?';
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 8, connectionTimeoutMillis: 5000, query_timeout: 20_000 });
pool.on('error', () => {});
// A checked-out client whose server went away reports it on itself: without a listener, the process would crash.
pool.on('connect', (client) => client.on('error', () => {}));

export async function chaos(args, { task, signal, succeedWith }) {
  if (args?.failFirst && task.attempt === 1) throw new Error('the first attempt of this task fails by design');
  if (args?.sleepMs) await sleep(args.sleepMs, undefined, { signal });
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${schema}.task_runs (task_id, attempt, node) VALUES ($1, $2, $3)`, [task.id, task.attempt, node]);
    const held = await succeedWith((text, params) => client.query(text, params).then((r) => r.rows));
    if (!held) throw new Error('lease lost: another run holds this task now');
    await client.query('COMMIT');
    client.release();
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    client.release(error);
    throw error;
  }
}
