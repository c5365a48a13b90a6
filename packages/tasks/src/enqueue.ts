import type { StandardSchemaV1 } from './standard-schema.js';
import { checkDefinedTask } from './task-args.js';
import type { TaskDefinition } from './task-registry.js';
import type { EnqueueOptions, EnqueueResult, TaskStore } from './task-store.js';

/**
 * The tutorial's start_later: enqueue one task to run on some node, as soon
 * as one asks for work. Given a task definition (`defineTask`), its args are
 * typed and checked against its schema first.
 */
export async function startLater<N extends string, S extends StandardSchemaV1>(
  store: TaskStore,
  task: TaskDefinition<N, S>,
  args: StandardSchemaV1.InferInput<S>,
  options?: EnqueueOptions,
): Promise<EnqueueResult>;
export async function startLater(store: TaskStore, name: string, args?: unknown, options?: EnqueueOptions): Promise<EnqueueResult>;
export async function startLater(
  store: TaskStore,
  task: string | TaskDefinition,
  args?: unknown,
  options?: EnqueueOptions,
): Promise<EnqueueResult> {
  if (typeof task !== 'string') await checkDefinedTask(task, args);
  const name = typeof task === 'string' ? task : task.name;
  const [result] = await store.enqueue([{ name, args, ...(options === undefined ? {} : { options }) }]);
  return result as EnqueueResult;
}
