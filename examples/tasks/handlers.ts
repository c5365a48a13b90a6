/**
 * The task runner from the GenStage tutorial: `start_later` puts work in the
 * store, a producer hands it to runners only as fast as they ask, and each
 * task runs once, with a timeout, its outcome recorded. Like the tutorial's
 * `auto_start_later`, this enqueues 2000 tasks when the agent starts, and
 * stops the agent once all of them have succeeded. Across hosts (each stage
 * given `nodes`), the agent that runs the producer enqueues; every agent
 * stops once all have succeeded.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { startLater, type TaskContext, type TaskStore } from '@stagefabric/tasks';

const TOTAL = 2000;
let done = 0;

/** A task handler: any function of (args, { signal, task }). */
export async function greet(args: { who: string; n: number }, { signal }: TaskContext): Promise<void> {
  // Some work that takes a moment and stops when the task is aborted (its timeout).
  await sleep(1 + (args.n % 5), undefined, { signal });
  done++;
  if (done % 250 === 0) console.log(`${done} tasks done (last: hello, ${args.who} #${args.n})`);
}

export async function onStart({
  store,
  stop,
  stages,
}: {
  store: TaskStore;
  stop: () => Promise<void>;
  stages: readonly string[];
}): Promise<void> {
  const started = Date.now();
  if (stages.includes('tasks')) {
    for (let n = 0; n < TOTAL; n++) await startLater(store, 'greet', { who: 'Lucy', n });
    console.log(`enqueued ${TOTAL} tasks`);
  }
  for (;;) {
    const counts = await store.counts();
    const succeeded = counts.find((c) => c.state === 'success')?.count ?? 0;
    if (succeeded >= TOTAL) break;
    await sleep(50);
  }
  console.log(
    `all ${TOTAL} tasks succeeded in ${((Date.now() - started) / 1000).toFixed(1)} s; states: ${JSON.stringify(await store.counts())}`,
  );
  await stop();
}
