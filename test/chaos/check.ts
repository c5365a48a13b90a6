import { existsSync, readFileSync } from 'node:fs';
import type pg from 'pg';
import type { ChaosAgent } from './agents.js';

export interface Verdict {
  readonly invariant: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface StoreFigures {
  readonly tasks: Record<string, number>;
  readonly taskRuns: number;
  readonly events: number;
  readonly eventsHandled: number;
  /** Deliveries of an event already handled: the fabric is at least once, the packer's effect once. */
  readonly repeats: number;
  /** Events the maker sent again because none handled them in time. */
  readonly resent: number;
  readonly demandRecords: number;
  readonly subscriptions: number;
}

const n = async (pool: pg.Pool, sql: string): Promise<number> => Number((await pool.query(sql)).rows[0]?.n ?? 0);

/** Reads the stores (and the agents' demand records) and checks the run's invariants. */
export async function checkStores(
  pool: pg.Pool,
  schema: string,
  agents: readonly ChaosAgent[],
): Promise<{ verdicts: Verdict[]; figures: StoreFigures }> {
  const verdicts: Verdict[] = [];
  const tasks: Record<string, number> = {};
  for (const row of (await pool.query(`SELECT state, count(*)::int AS n FROM ${schema}.tasks GROUP BY state`)).rows)
    tasks[row.state] = row.n;
  const unfinished = (tasks.waiting ?? 0) + (tasks.running ?? 0);
  verdicts.push({ invariant: 'every task reached a final state', ok: unfinished === 0, detail: `${unfinished} waiting or running` });

  const twice = await n(pool, `SELECT count(*) AS n FROM (SELECT task_id FROM ${schema}.task_runs GROUP BY task_id HAVING count(*) > 1) x`);
  const successWithoutRun = await n(
    pool,
    `SELECT count(*) AS n FROM ${schema}.tasks t WHERE t.state = 'success' AND NOT EXISTS (SELECT 1 FROM ${schema}.task_runs r WHERE r.task_id = t.id)`,
  );
  const runWithoutSuccess = await n(
    pool,
    `SELECT count(*) AS n FROM ${schema}.task_runs r JOIN ${schema}.tasks t ON t.id = r.task_id WHERE t.state <> 'success'`,
  );
  verdicts.push({
    invariant: 'each successful task ran to success exactly once',
    ok: twice === 0 && successWithoutRun === 0 && runWithoutSuccess === 0,
    detail: `${twice} tasks with more than one successful run, ${successWithoutRun} successes without a run, ${runWithoutSuccess} runs of tasks not in success`,
  });
  const failed = (tasks.error ?? 0) + (tasks.timeout ?? 0) + (tasks.cancelled ?? 0);
  verdicts.push({
    invariant: 'no task failed for good (each may fail 24 times)',
    ok: failed === 0,
    detail: `${failed} in error, timeout or cancelled`,
  });

  const events = await n(pool, `SELECT count(*) AS n FROM ${schema}.events`);
  const missing = await n(
    pool,
    `SELECT count(*) AS n FROM ${schema}.events e WHERE NOT EXISTS (SELECT 1 FROM ${schema}.handled h WHERE h.event_id = e.id)`,
  );
  const strangers = await n(
    pool,
    `SELECT count(*) AS n FROM ${schema}.handled h WHERE NOT EXISTS (SELECT 1 FROM ${schema}.events e WHERE e.id = h.event_id)`,
  );
  const expectedSum = await n(pool, `SELECT coalesce(sum(value), 0) AS n FROM ${schema}.events`);
  const totals = (
    await pool.query(`SELECT handled::bigint AS handled, value_sum::bigint AS value_sum, repeats, resent FROM ${schema}.totals`)
  ).rows[0] as Record<string, string>;
  const handled = Number(totals.handled);
  verdicts.push({
    invariant: 'every event the pipeline produced was handled by the packer',
    ok: missing === 0 && strangers === 0,
    detail: `${events} events, ${missing} never handled, ${strangers} handled that were never produced`,
  });
  verdicts.push({
    invariant: 'no event took effect twice',
    ok: handled === events && Number(totals.value_sum) === expectedSum,
    detail: `effects counted ${handled} for ${events} events; value sum ${totals.value_sum}, expected ${expectedSum}`,
  });

  let records = 0;
  const subscriptions = new Set<string>();
  const over: string[] = [];
  for (const agent of agents) {
    if (!existsSync(agent.auditFile)) continue;
    for (const line of readFileSync(agent.auditFile, 'utf8').split('\n')) {
      if (line === '') continue;
      let r: { node: string; side: string; key: string; epoch: number; asked: number; received: number };
      try {
        r = JSON.parse(line);
      } catch {
        // A kill -9 in the middle of a write could cut the last line; the write is one synchronous append, so this is only the tail.
        continue;
      }
      records++;
      subscriptions.add(`${r.node}:${r.side}:${r.key}#${r.epoch}`);
      if (r.received > r.asked && over.length < 10)
        over.push(`${r.key} epoch ${r.epoch} (${r.side} side, on ${r.node}): received ${r.received}, asked ${r.asked}`);
    }
  }
  verdicts.push({
    invariant: 'no subscription received more than it asked for',
    ok: over.length === 0 && records > 0,
    detail: over.length > 0 ? over.join('; ') : `${records} records of ${subscriptions.size} subscriptions`,
  });

  return {
    verdicts,
    figures: {
      tasks,
      taskRuns: await n(pool, `SELECT count(*) AS n FROM ${schema}.task_runs`),
      events,
      eventsHandled: handled,
      repeats: Number(totals.repeats),
      resent: Number(totals.resent),
      demandRecords: records,
      subscriptions: subscriptions.size,
    },
  };
}
