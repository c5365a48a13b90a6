import type { EnqueueOptions, EnqueueResult, TaskStore } from './task-store.js';

/** The tutorial's start_later: enqueue one task to run on some node, as soon as one asks for work. */
export async function startLater(store: TaskStore, name: string, args?: unknown, options?: EnqueueOptions): Promise<EnqueueResult> {
  const [result] = await store.enqueue([{ name, args, ...(options === undefined ? {} : { options }) }]);
  return result as EnqueueResult;
}
