/**
 * One agent process of the tasks benchmark's scaling runs: a task pipeline
 * (producer and runner co-located, 50 running at once) on the PostgreSQL
 * store named by argv (url, schema, owner). It tells its parent over IPC how
 * many tasks it ran (one message per event-loop turn), `ready` once it is
 * listening, and its heap after a GC when asked `heap`. It stops on `stop`.
 */
import { StageSystem } from '@stagefabric/runtime';
import { startTaskPipeline, TaskRegistry } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';

const [url, schema, owner] = process.argv.slice(2) as [string, string, string];
const send = (message: unknown) => process.send?.(message);

let ran = 0;
let telling = false;
const tell = () => {
  telling = false;
  const n = ran;
  ran = 0;
  send({ ran: n });
};
const store = new PostgresTaskStore({ url, schema });
const registry = new TaskRegistry().register('noop', () => {
  ran++;
  if (!telling) {
    telling = true;
    setImmediate(tell);
  }
});
const system = new StageSystem();
const pipeline = await startTaskPipeline(system, {
  store,
  registry,
  owner,
  pollIntervalMs: 1000,
  concurrency: 50,
  maxDemand: 500,
  minDemand: 250,
});
process.on('message', async (message) => {
  if (message === 'heap') {
    (globalThis as { gc?: () => void }).gc?.();
    send({ heap: process.memoryUsage().heapUsed });
  } else if (message === 'stop') {
    await pipeline.stop();
    await system.shutdown();
    await store.close();
    process.exit(0);
  }
});
send('ready');
