import { FabricError } from '@stagefabric/runtime';
import type { StandardSchemaV1 } from './standard-schema.js';
import type { TaskDefinition, TaskRegistry } from './task-registry.js';
import type { EnqueueOptions, EnqueueResult, NewTask, TaskStore } from './task-store.js';

/** One field a schema refused: where (`args.items[2].qty`) and why, in the schema library's words. */
export interface TaskArgsIssue {
  readonly path: string;
  readonly message: string;
}

/**
 * A task's args do not match the schema its handler declares. At enqueue,
 * nothing of the batch was stored; at run, the task fails for good (a retry
 * would meet the same args).
 */
export class TaskArgsError extends FabricError {
  override readonly name = 'TaskArgsError';

  constructor(
    /** The task's handler name. */
    readonly task: string,
    readonly issues: readonly TaskArgsIssue[],
    /** Which task: `task 3 (send-email)` at enqueue, `task 42 (send-email), attempt 1` at run. */
    where: string,
  ) {
    const shown = issues.slice(0, 5).map((i) => `${i.path}: ${i.message}`);
    if (issues.length > 5) shown.push(`and ${issues.length - 5} more`);
    super('SF_BAD_TASK_ARGS', `${where}: args do not match the schema of "${task}": ${shown.join('; ')}`);
  }
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** `args`, `args.to`, `args.items[2]`, `args["a b"]`. */
function issuePath(issue: StandardSchemaV1.Issue): string {
  let path = 'args';
  for (const segment of issue.path ?? []) {
    const key = typeof segment === 'object' && segment !== null ? segment.key : segment;
    if (typeof key === 'number') path += `[${key}]`;
    else if (typeof key === 'string' && IDENTIFIER.test(key)) path += `.${key}`;
    else path += `[${JSON.stringify(String(key))}]`;
  }
  return path;
}

/** Validates `args` with `schema` (sync or async, as the library answers): the schema's output, or a TaskArgsError naming each bad field. */
export async function validateTaskArgs(name: string, schema: StandardSchemaV1, args: unknown, where: string): Promise<unknown> {
  let result = schema['~standard'].validate(args);
  if (result instanceof Promise) result = await result;
  if (result.issues === undefined) return result.value;
  throw new TaskArgsError(
    name,
    result.issues.map((issue) => ({ path: issuePath(issue), message: issue.message })),
    where,
  );
}

/** A task for `enqueueTasks`: a registered name and args of the type its schema takes (optional when it takes undefined). */
export type TaskOf<Tasks extends object> = {
  [K in keyof Tasks & string]: { readonly name: K; readonly options?: EnqueueOptions } & (undefined extends Tasks[K]
    ? { readonly args?: Tasks[K] }
    : { readonly args: Tasks[K] });
}[keyof Tasks & string];

/**
 * Checks every task of a batch that names a handler with a schema; throws
 * the first TaskArgsError before anything is stored. Tasks of handlers
 * without a schema, or of names this registry does not know, pass as they
 * are (the store checks what it always checks).
 */
export async function checkTaskArgs(registry: TaskRegistry<object>, tasks: readonly NewTask[]): Promise<void> {
  for (const [i, task] of tasks.entries()) {
    const schema = typeof task?.name === 'string' ? registry.lookup(task.name)?.schema : undefined;
    if (schema !== undefined) await validateTaskArgs(task.name, schema, task.args, `task ${i} (${task.name})`);
  }
}

/**
 * Enqueues a batch after checking each task's args against its handler's
 * schema: TypeScript infers names and args from the registry, and a wrong
 * payload fails with SF_BAD_TASK_ARGS naming the task and the bad field's
 * path, nothing of the batch stored. Args are stored as given (the schema's
 * input), as JSON; the handler gets the schema's output.
 */
export async function enqueueTasks<Tasks extends object>(
  store: TaskStore,
  registry: TaskRegistry<Tasks>,
  tasks: readonly TaskOf<Tasks>[],
): Promise<EnqueueResult[]> {
  await checkTaskArgs(registry, tasks as readonly NewTask[]);
  return store.enqueue(tasks as readonly NewTask[]);
}

/** Checks one task's args against a definition's schema before it is enqueued. */
export async function checkDefinedTask(definition: TaskDefinition, args: unknown): Promise<void> {
  await validateTaskArgs(definition.name, definition.schema, args, `task 0 (${definition.name})`);
}
