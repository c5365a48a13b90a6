import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { type StageRef, StageSystem } from '@stagefabric/runtime';
import { type TaskProducerOptions, taskProducer } from './task-producer.js';
import { type TaskHandler, TaskRegistry, type TypedTask } from './task-registry.js';
import { type TaskRunnerOptions, taskRunner } from './task-runner.js';

export interface TaskPipelineOptions extends Omit<TaskProducerOptions, 'onError'>, Omit<TaskRunnerOptions, 'subscribeTo' | 'onError'> {
  /** Tasks in the runner's hands at most, running or prefetched. Default 100. */
  readonly maxDemand?: number;
  /** The runner asks again when its demand falls to this. Default maxDemand / 2. */
  readonly minDemand?: number;
  /** Registered name of the producer stage. Default 'tasks'. */
  readonly name?: string;
  readonly onError?: (error: Error) => void;
}

export interface TaskPipeline {
  readonly producer: StageRef;
  readonly runner: StageRef;
  /**
   * Graceful stop: the runner drains (running tasks finish within drainMs),
   * then the producer stops, then every task the owner still holds goes back
   * to waiting, for other nodes at once.
   */
  stop(): Promise<void>;
}

/** A task producer and a runner subscribed to it, in one call: the task runner without a topology file. */
export async function startTaskPipeline(system: StageSystem, options: TaskPipelineOptions): Promise<TaskPipeline> {
  const { maxDemand = 100, minDemand, name = 'tasks', ...rest } = options;
  const producer = await system.start(taskProducer(rest), undefined, { name });
  const runner = await system.start(
    taskRunner({ ...rest, subscribeTo: [{ to: producer, maxDemand, ...(minDemand === undefined ? {} : { minDemand }) }] }),
    undefined,
  );
  const stop = async () => {
    await system.stop(runner, 'shutdown');
    await system.stop(producer, 'shutdown');
    await options.store.releaseHeld(options.owner);
  };
  return { producer, runner, stop };
}

export interface TaskWorkerOptions extends Omit<TaskPipelineOptions, 'registry' | 'owner'> {
  /** Handlers by task name (functions, or typed tasks `{ schema, handler }`), or a registry. */
  // biome-ignore lint/suspicious/noExplicitAny: each typed task has args of its own schema
  readonly handlers: TaskRegistry<object> | Readonly<Record<string, TaskHandler | TypedTask<any>>>;
  /** Lease owner. Default: host name, process id and a nonce, unique to this worker. */
  readonly owner?: string;
}

export interface TaskWorker extends TaskPipeline {
  readonly owner: string;
}

/**
 * Runs tasks in this process with a stage system of its own: what an
 * application that only wants durable tasks (no topology, no fabric) calls.
 * `stop()` drains it and hands back what it still holds.
 */
export async function startTaskWorker(options: TaskWorkerOptions): Promise<TaskWorker> {
  const { handlers, owner = `${hostname()}/${process.pid}/${randomUUID().slice(0, 8)}`, ...rest } = options;
  const registry = handlers instanceof TaskRegistry ? handlers : TaskRegistry.from(handlers);
  const system = new StageSystem();
  const pipeline = await startTaskPipeline(system, { ...rest, registry, owner });
  return {
    ...pipeline,
    owner,
    async stop() {
      await pipeline.stop();
      await system.shutdown();
    },
  };
}
