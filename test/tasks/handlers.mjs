// Task handlers for the multi-agent task tests. Each execution is recorded in a
// table of the test's own (TASK_RUNS_TABLE), so the checker counts executions
// from the database, not from the agents.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

const table = process.env.TASK_RUNS_TABLE;
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on('error', () => {});

export async function record(args, { task, signal }) {
  if (args?.sleepMs) await sleep(args.sleepMs, undefined, { signal });
  await pool.query(`INSERT INTO ${table} (task_id, node) VALUES ($1, $2)`, [task.id, process.env.STAGEFABRIC_NODE ?? '?']);
}
