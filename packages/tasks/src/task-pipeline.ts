import type { StageRef, StageSystem } from '@stagefabric/runtime';
import { type TaskProducerOptions, taskProducer } from './task-producer.js';
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
