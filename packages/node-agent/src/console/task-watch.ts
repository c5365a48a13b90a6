import { FINAL_STATES, type TaskState, type TaskStore } from '@stagefabric/tasks';

export const TASK_STATES: readonly TaskState[] = ['waiting', 'running', ...FINAL_STATES];

export interface QueueSummary {
  readonly queue: string;
  readonly counts: Readonly<Record<TaskState, number>>;
  readonly paused: boolean;
  /** Tasks finished per second (success, error, timeout) between successive reads, oldest first. */
  readonly finishedPerS: readonly number[];
}

interface CountSample {
  readonly at: number;
  readonly finished: ReadonlyMap<string, number>;
}

/** Reads kept for the rate sparklines: a minute at the default refresh. */
const HISTORY = 60;

/**
 * Queue counts as the console shows them: read from the store at most once
 * per `refreshMs` however many pages watch, with the finished-per-second
 * rate of each queue over the last HISTORY reads.
 */
export class TaskWatch {
  private readonly history: CountSample[] = [];
  private last: { at: number; queues: QueueSummary[] } | undefined;
  private reading: Promise<void> | undefined;
  private error: string | undefined;

  constructor(
    readonly store: TaskStore,
    private readonly refreshMs: number,
  ) {}

  async summary(): Promise<{ queues: readonly QueueSummary[]; error: string | undefined }> {
    if (this.last === undefined || Date.now() - this.last.at >= this.refreshMs) {
      this.reading ??= this.read().finally(() => {
        this.reading = undefined;
      });
      await this.reading;
    }
    return { queues: this.last?.queues ?? [], error: this.error };
  }

  private async read(): Promise<void> {
    try {
      const [counts, paused] = await Promise.all([this.store.counts(), this.store.paused()]);
      const at = Date.now();
      const names = [...new Set([...counts.map((c) => c.queue), ...paused])].sort();
      const finished = new Map(
        names.map((q) => [
          q,
          counts.filter((c) => c.queue === q && c.state !== 'cancelled' && FINAL_STATES.includes(c.state)).reduce((n, c) => n + c.count, 0),
        ]),
      );
      this.history.push({ at, finished });
      if (this.history.length > HISTORY + 1) this.history.shift();
      const queues = names.map((queue): QueueSummary => {
        const byState = Object.fromEntries(TASK_STATES.map((s) => [s, 0])) as Record<TaskState, number>;
        for (const c of counts) if (c.queue === queue) byState[c.state] = c.count;
        const finishedPerS: number[] = [];
        for (let i = 1; i < this.history.length; i++) {
          const a = this.history[i - 1] as CountSample;
          const b = this.history[i] as CountSample;
          const seconds = Math.max(0.001, (b.at - a.at) / 1000);
          // A retry takes tasks out of the finished states: a fall is no work done, not negative work.
          finishedPerS.push(Math.max(0, ((b.finished.get(queue) ?? 0) - (a.finished.get(queue) ?? 0)) / seconds));
        }
        return { queue, counts: byState, paused: paused.includes(queue), finishedPerS };
      });
      this.last = { at, queues };
      this.error = undefined;
    } catch (error) {
      this.error = `cannot read the task store: ${(error as Error).message}`;
    }
  }
}
