// Task handlers of the placement matrix (placement.integration.test.ts). Every
// run is logged to PLACEMENT_SCHEMA.runs as it starts; a success's effect is
// a row of PLACEMENT_SCHEMA.effects, written with the success in one
// transaction where the store is this same database (PLACEMENT_EFFECTS=with-success:
// succeedWith), else keyed by the task so a run repeated after a lost outcome
// does not repeat it. The checker reads both tables, not the agents.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

const schema = process.env.PLACEMENT_SCHEMA;
const node = process.env.STAGEFABRIC_NODE ?? '?';
const withSuccess = process.env.PLACEMENT_EFFECTS === 'with-success';
const pool = new pg.Pool({ connectionString: process.env.PLACEMENT_DATABASE_URL, max: 8 });
pool.on('error', () => {});
pool.on('connect', (client) => client.on('error', () => {}));

const log = (task, handler) =>
  pool.query(`INSERT INTO ${schema}.runs (task_id, attempt, node, handler) VALUES ($1, $2, $3, $4)`, [
    task.id,
    task.attempt,
    node,
    handler,
  ]);

export async function succeed(args, { task, signal, succeedWith }) {
  await log(task, 'succeed');
  if (args?.sleepMs) await sleep(args.sleepMs, undefined, { signal });
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    if (withSuccess) {
      await client.query(`INSERT INTO ${schema}.effects (task_id) VALUES ($1)`, [task.id]);
      const held = await succeedWith((text, params) => client.query(text, params).then((r) => r.rows));
      if (!held) throw new Error('lease lost: another run holds this task');
    } else {
      await client.query(
        `INSERT INTO ${schema}.effects (task_id) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM ${schema}.effects WHERE task_id = $1)`,
        [task.id],
      );
    }
    await client.query('COMMIT');
    client.release();
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    client.release(error);
    throw error;
  }
}

export async function fail(_args, { task }) {
  await log(task, 'fail');
  throw new Error('fails by design');
}

export async function hang(_args, { task, signal }) {
  await log(task, 'hang');
  await sleep(600_000, undefined, { signal });
}

/** Kills the agent that runs it, as a task that brings its node down. */
export async function crash(_args, { task }) {
  await log(task, 'crash');
  process.kill(process.pid, 'SIGKILL');
  await sleep(600_000);
}

/**
 * An embedded store lives in its agent's memory: the workload comes in here
 * (PLACEMENT_WORKLOAD, on the node of the producer) and, once every task is
 * final, the final states go out to PLACEMENT_SCHEMA.final; then the agent stops.
 */
export async function onStart({ store, stop, stages }) {
  const workload = process.env.PLACEMENT_WORKLOAD;
  if (workload === undefined || workload === '' || !stages.includes('tasks')) return;
  const ids = (await store.enqueue(JSON.parse(workload))).map((r) => r.id);
  for (;;) {
    const tasks = (await store.list({ limit: 1_000_000 })).filter((t) => ids.includes(t.id));
    if (tasks.every((t) => t.state !== 'waiting' && t.state !== 'running')) {
      for (const t of tasks)
        await pool.query(`INSERT INTO ${schema}.final (task_id, name, state, attempt, last_error) VALUES ($1, $2, $3, $4, $5)`, [
          t.id,
          t.name,
          t.state,
          t.attempt,
          t.lastError,
        ]);
      break;
    }
    await sleep(50);
  }
  await stop();
}
