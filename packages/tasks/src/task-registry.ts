import { FabricError } from '@stagefabric/runtime';
import type { Query } from './sql-task-store.js';
import type { StandardSchemaV1 } from './standard-schema.js';
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

/**
 * A handler that declares its args with a Standard Schema validator (zod,
 * valibot, arktype...): tasks are checked against it when they are enqueued
 * through the registry or the definition, and again before the handler runs,
 * which gets the schema's output.
 */
export interface TypedTask<S extends StandardSchemaV1 = StandardSchemaV1> {
  readonly schema: S;
  readonly handler: (args: StandardSchemaV1.InferOutput<S>, context: TaskContext) => unknown;
  /** How long a failed attempt of this handler's tasks waits before the next. Default: the runner's exponential backoff. */
  readonly backoff?: TaskBackoff;
}

export interface TaskHandlerOptions {
  /** How long a failed attempt of this handler's tasks waits before the next. Default: the runner's exponential backoff. */
  readonly backoff?: TaskBackoff;
}

/** A typed task with its name: what `defineTask` returns, for `register` and `startLater`. */
export interface TaskDefinition<N extends string = string, S extends StandardSchemaV1 = StandardSchemaV1> extends TypedTask<S> {
  readonly name: N;
}

/** Names a typed task once, so its handler's args and every enqueue of it take their type from its schema. */
export function defineTask<const N extends string, S extends StandardSchemaV1>(name: N, task: TypedTask<S>): TaskDefinition<N, S> {
  checkTypedTask(name, task);
  return { name, schema: task.schema, handler: task.handler, ...(task.backoff === undefined ? {} : { backoff: task.backoff }) };
}

/** What the registry holds for one name: its handler, and its schema when it declared one. */
export interface RegisteredTask {
  readonly handler: TaskHandler;
  readonly schema: StandardSchemaV1 | undefined;
}

function isTypedTask(value: unknown): value is TypedTask {
  return typeof value === 'object' && value !== null && 'schema' in value && 'handler' in value;
}

function checkTypedTask(name: string, task: { readonly schema: unknown; readonly handler: unknown }): void {
  const standard = (task.schema as Partial<StandardSchemaV1> | undefined)?.['~standard'];
  if (typeof standard?.validate !== 'function' || standard.version !== 1)
    throw new FabricError('SF_BAD_OPTION', `task "${name}": schema must be a Standard Schema v1 validator (zod, valibot, arktype...)`);
  if (typeof task.handler !== 'function')
    throw new FabricError('SF_BAD_OPTION', `task "${name}": handler must be a function (got ${typeof task.handler})`);
}

// biome-ignore lint/complexity/noBannedTypes: an empty map of task names to args types, grown by each register
type NoTasks = {};

/**
 * Handlers by name: a task names its handler, and only registered code ever
 * runs. `Tasks` maps each registered name to the args its tasks are enqueued
 * with (the schema's input type, or `unknown` for a handler without one), so
 * `enqueueTasks` checks names and args at compile time.
 */
export class TaskRegistry<Tasks extends object = NoTasks> {
  /** Never set: carries `Tasks` for type inference. */
  declare readonly argsByName?: Tasks;
  private readonly entries = new Map<string, RegisteredTask>();
  private readonly backoffs = new Map<string, TaskBackoff>();

  /** Builds a registry from an object of handlers, as a handlers module exports it: functions, or `{ schema, handler }`. */
  static from(handlers: Record<string, unknown>): TaskRegistry<Record<string, unknown>> {
    const registry = new TaskRegistry<Record<string, unknown>>();
    for (const [name, handler] of Object.entries(handlers)) {
      if (isTypedTask(handler)) {
        registry.add(name, handler.handler as TaskHandler, handler.schema, 'SF_BAD_STAGE_MODULE', handler.backoff);
        continue;
      }
      if (typeof handler !== 'function')
        throw new FabricError(
          'SF_BAD_STAGE_MODULE',
          `task handler "${name}" is not a function or { schema, handler } (got ${typeof handler})`,
        );
      // A handlers module gives a handler its options as properties of the function: `send.backoff = { … }`.
      const { backoff } = handler as { backoff?: TaskBackoff };
      registry.register(name, handler as TaskHandler, backoff === undefined ? {} : { backoff });
    }
    return registry;
  }

  register<const N extends string, S extends StandardSchemaV1>(
    definition: TaskDefinition<N, S>,
  ): TaskRegistry<Tasks & { [K in N]: StandardSchemaV1.InferInput<S> }>;
  register<const N extends string, S extends StandardSchemaV1>(
    name: N,
    task: TypedTask<S>,
  ): TaskRegistry<Tasks & { [K in N]: StandardSchemaV1.InferInput<S> }>;
  register<const N extends string>(
    name: N,
    handler: TaskHandler,
    options?: TaskHandlerOptions,
  ): TaskRegistry<Tasks & { [K in N]: unknown }>;
  register(
    nameOrDefinition: string | TaskDefinition,
    task?: TaskHandler | TypedTask,
    options: TaskHandlerOptions = {},
  ): TaskRegistry<object> {
    if (typeof nameOrDefinition !== 'string') return this.register(nameOrDefinition.name, nameOrDefinition);
    const name = nameOrDefinition;
    if (isTypedTask(task)) return this.add(name, task.handler as TaskHandler, task.schema, 'SF_BAD_OPTION', task.backoff);
    if (typeof task !== 'function') throw new FabricError('SF_BAD_OPTION', `task handler "${name}" is not a function (got ${typeof task})`);
    return this.add(name, task, undefined, 'SF_BAD_OPTION', options.backoff);
  }

  private add(
    name: string,
    handler: TaskHandler,
    schema: StandardSchemaV1 | undefined,
    code: 'SF_BAD_OPTION' | 'SF_BAD_STAGE_MODULE',
    backoff: TaskBackoff | undefined,
  ) {
    if (schema !== undefined) {
      try {
        checkTypedTask(name, { schema, handler });
      } catch (error) {
        throw new FabricError(code, (error as Error).message);
      }
    }
    if (this.entries.has(name)) throw new FabricError('SF_BAD_OPTION', `a task handler named "${name}" is already registered`);
    if (backoff !== undefined) this.backoffs.set(name, checkBackoff(name, backoff));
    this.entries.set(name, { handler, schema });
    // biome-ignore lint/suspicious/noExplicitAny: the same registry, its type grown by this name
    return this as any;
  }

  /** The backoff the handler registered with, if any. */
  backoffOf(name: string): TaskBackoff | undefined {
    return this.backoffs.get(name);
  }

  get(name: string): TaskHandler | undefined {
    return this.entries.get(name)?.handler;
  }

  /** The handler and its schema, if one is registered under `name`. */
  lookup(name: string): RegisteredTask | undefined {
    return this.entries.get(name);
  }

  names(): string[] {
    return [...this.entries.keys()].sort();
  }
}
