// One scheduler in a process of its own, on a clock the test drives: for each
// line `tick MS` on stdin it sets its clock to MS, makes one pass over the
// store's schedules and answers `ticked FIRED SKIPPED DUPLICATES` (counts so far). Several of these race
// on one store in the schedule tests.
import { createInterface } from 'node:readline';
import { FakeClock } from '@stagefabric/runtime';
import { openTaskStore, startTaskScheduler } from '@stagefabric/tasks';

const [kind, url, namespace, startMs] = process.argv.slice(2);
const store = await openTaskStore(
  kind === 'bullmq' ? { kind, redisUrl: url, prefix: namespace } : { kind: 'postgres', databaseUrl: url, schema: namespace },
);
const clock = new FakeClock(Number(startMs));
let fired = 0;
let skipped = 0;
let duplicates = 0;
const scheduler = startTaskScheduler({
  store,
  clock,
  // Passes only when the test asks.
  intervalMs: 2_000_000_000,
  missedAfterMs: 5000,
  onFired: (_schedule, _fireAt, result) => {
    if (result.duplicate) duplicates++;
    else fired++;
  },
  onSkipped: (_schedule, count) => {
    skipped += count;
  },
  onError: (error) => {
    process.stderr.write(`${error.stack}\n`);
    process.exit(1);
  },
});
process.stdout.write('ready\n');
for await (const line of createInterface({ input: process.stdin })) {
  const [verb, ms] = line.split(' ');
  if (verb !== 'tick') continue;
  clock.advance(Number(ms) - clock.now());
  await scheduler.tick();
  process.stdout.write(`ticked ${fired} ${skipped} ${duplicates}\n`);
}
await scheduler.stop();
await store.close();
