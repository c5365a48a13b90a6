import { FabricError } from '@stagefabric/runtime';
import type { Query } from './sql-task-store.js';
import { checkBackoff, type TaskBackoff } from './task-backoff.js';
import type { ClaimedTask, TaskProgress } from './task-store.js';

export interface TaskContext {
  /** Aborts when the task times out or its agent stops. */
  readonly signal: AbortSignal;
  readonly task: ClaimedTask;
  /**
   * SQL stores only: records this task's success inside the handler's own
   * transaction (pass its query function), so the handler's writes and the
   * outcome commit together: a task whose effects are written this way takes
   * effect exactly once, even when its node stalls past the lease and
   * another node runs it again. False when this run no longer holds the
   * task: roll back.
   */
  readonly succeedWith?: (query: Query) => Promise<boolean>;
  /**
   * Reports progress (a percentage from 0 to 100, or a JSON object of at
   * most 4 KiB): stored with the task, one write each call, shown on the
   * console's task page and by `get`. False when this run no longer holds
   * the task. Bad progress is refused with SF_BAD_OPTION.
   */
  readonly progress: (progress: TaskProgress) => Promise<boolean>;
}

// biome-ignore lint/suspicious/noExplicitAny: a handler takes whatever args its tasks were enqueued with
export type TaskHandler = (args: any, context: TaskContext) => unknown;

/** Handlers by name: a task names its handler, and only registered code ever runs. */
export interface TaskHandlerOptions {
  /** How long a failed attempt of this handler's tasks waits before the next. Default: the runner's exponential backoff. */
  readonly backoff?: TaskBackoff;
}

export class TaskRegistry {
  private readonly handlers = new Map<string, TaskHandler>();
  private readonly backoffs = new Map<string, TaskBackoff>();

  /** Builds a registry from an object of handlers, as a handlers module exports it. */
  static from(handlers: Record<string, unknown>): TaskRegistry {
    const registry = new TaskRegistry();
    for (const [name, handler] of Object.entries(handlers)) {
      if (typeof handler !== 'function')
        throw new FabricError('SF_BAD_STAGE_MODULE', `task handler "${name}" is not a function (got ${typeof handler})`);
      // A handlers module gives a handler its options as properties of the function: `send.backoff = { … }`.
      const { backoff } = handler as { backoff?: TaskBackoff };
      registry.register(name, handler as TaskHandler, backoff === undefined ? {} : { backoff });
    }
    return registry;
  }

  register(name: string, handler: TaskHandler, options: TaskHandlerOptions = {}): this {
    if (this.handlers.has(name)) throw new FabricError('SF_BAD_OPTION', `a task handler named "${name}" is already registered`);
    if (options.backoff !== undefined) this.backoffs.set(name, checkBackoff(name, options.backoff));
    this.handlers.set(name, handler);
    return this;
  }

  /** The backoff the handler registered with, if any. */
  backoffOf(name: string): TaskBackoff | undefined {
    return this.backoffs.get(name);
  }

  get(name: string): TaskHandler | undefined {
    return this.handlers.get(name);
  }

  names(): string[] {
    return [...this.handlers.keys()].sort();
  }
}
