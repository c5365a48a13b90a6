// Task handlers for the console test. A task with `failOnce` fails its first
// run in this agent process (the error it names), and succeeds when it runs
// again, whether by its own retry or by an operator's.
const failedOnce = new Set();

export async function work(args, { task }) {
  if (args?.failOnce && !failedOnce.has(task.id)) {
    failedOnce.add(task.id);
    throw new Error(args.error ?? 'failed on its first run');
  }
}
