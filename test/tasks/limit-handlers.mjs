// Task handlers for the limits test: each run records its own start and end
// (this process's clock, ms since epoch), when its task was claimed (the
// lease it was handed, less the lease length TASK_LEASE_MS) and its group in
// a table of the test's own (TASK_RUNS_TABLE), so the checker counts
// concurrent runs and starts per window from the handlers' records.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

const table = process.env.TASK_RUNS_TABLE;
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on('error', () => {});

export async function timed(args, { task, signal }) {
  const started = Date.now();
  await sleep(args.sleepMs, undefined, { signal });
  const ended = Date.now();
  await pool.query(
    `INSERT INTO ${table} (task_id, queue, grp, n, node, claimed_ms, started_ms, ended_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      task.id,
      task.queue,
      args.group ?? null,
      args.n,
      process.env.STAGEFABRIC_NODE ?? '?',
      task.leaseExpiresAt.getTime() - Number(process.env.TASK_LEASE_MS),
      started,
      ended,
    ],
  );
}
