import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import type pg from 'pg';
import type { Random } from './random.js';

/** The chaos run's tables, beside the task store's in one schema. */
export async function createSchema(pool: pg.Pool, schema: string): Promise<void> {
  await pool.query(`CREATE SCHEMA ${schema};
    CREATE TABLE ${schema}.events (id bigserial PRIMARY KEY, value integer NOT NULL);
    CREATE TABLE ${schema}.handled (event_id bigint PRIMARY KEY, node text NOT NULL, at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE ${schema}.totals (handled bigint NOT NULL, value_sum bigint NOT NULL, repeats bigint NOT NULL, resent bigint NOT NULL);
    INSERT INTO ${schema}.totals VALUES (0, 0, 0, 0);
    CREATE TABLE ${schema}.task_runs (task_id bigint NOT NULL, attempt integer NOT NULL, node text NOT NULL, at timestamptz NOT NULL DEFAULT now());`);
}

/**
 * What the harness puts in: events for the pipeline at a steady rate, tasks
 * at a steady rate, and bursts of tasks on demand. Inserts that fail (the
 * database is restarting) are retried; figures count what was acknowledged.
 */
export class Workload {
  eventsAcknowledged = 0;
  tasksAcknowledged = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private readonly store: PostgresTaskStore;

  constructor(
    private readonly pool: pg.Pool,
    url: string,
    private readonly schema: string,
    private readonly random: Random,
    private readonly rates: { readonly eventsPerSecond: number; readonly tasksPerSecond: number },
  ) {
    this.store = new PostgresTaskStore({ url, schema, poolSize: 2 });
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), 100);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const events = Math.round(this.rates.eventsPerSecond / 10);
      const values = Array.from({ length: events }, () => this.random.int(1, 1000));
      await this.pool.query(`INSERT INTO ${this.schema}.events (value) SELECT unnest($1::integer[])`, [values]);
      this.eventsAcknowledged += events;
      await this.enqueue(Math.round(this.rates.tasksPerSecond / 10));
    } catch {
      // The database is down for a moment: the next tick goes on.
    } finally {
      this.ticking = false;
    }
  }

  /** Enqueues `count` tasks in chunks; one in fifty fails its first attempt by design, some sleep a little. */
  async enqueue(count: number): Promise<void> {
    for (let done = 0; done < count; ) {
      const n = Math.min(5000, count - done);
      const tasks = Array.from({ length: n }, () => ({
        name: 'chaos',
        args: { failFirst: this.random.chance(0.02), sleepMs: this.random.chance(0.1) ? this.random.int(1, 50) : 0 },
        options: { maxAttempts: 25, timeoutMs: 10_000 },
      }));
      for (let attempt = 0; ; attempt++) {
        try {
          await this.store.enqueue(tasks);
          break;
        } catch (error) {
          if (attempt >= 60) throw error;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      this.tasksAcknowledged += n;
      done += n;
    }
  }

  async close(): Promise<void> {
    this.stop();
    await this.store.close();
  }
}
