import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { describeValue, FabricError } from '@stagefabric/runtime';
import { checkTasks, type EnqueueOptions, type NewTask, type TaskStore } from '@stagefabric/tasks';

/** Tasks sent to the store in one enqueue. */
export const FILE_BATCH = 1000;

/** A task file that cannot be enqueued as it stands: exit 2, with what was enqueued and where to resume. */
export class TaskFileError extends FabricError {
  override readonly name = 'TaskFileError';

  constructor(message: string) {
    super('SF_BAD_USAGE', message);
  }
}

interface Line {
  readonly line: number;
  readonly task: NewTask;
}

/**
 * One task of a task file: `{"name": ..., "args": ..., "options": {...}}`,
 * every enqueue option allowed, `runAt` as an ISO 8601 date or epoch
 * milliseconds. The file's options win over the command line's. Checked as
 * the store checks a batch, so a bad line is refused here, by its number.
 */
export function parseTaskLine(where: string, text: string, defaults: EnqueueOptions): NewTask {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TaskFileError(`${where}: not JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new TaskFileError(`${where}: expected {"name": "...", "args": ..., "options": {...}}, got ${describeValue(value)}`);
  const { name, args, options, ...rest } = value as Record<string, unknown>;
  const extra = Object.keys(rest);
  if (extra.length > 0) throw new TaskFileError(`${where}: unknown field ${extra.join(', ')} (a task has name, args and options)`);
  if (options !== undefined && (typeof options !== 'object' || options === null || Array.isArray(options)))
    throw new TaskFileError(`${where}: options must be an object, got ${describeValue(options)}`);
  const given = { ...(options as Record<string, unknown> | undefined) };
  if (given.runAt !== undefined) {
    const runAt = typeof given.runAt === 'string' || typeof given.runAt === 'number' ? new Date(given.runAt) : undefined;
    if (runAt === undefined || Number.isNaN(runAt.getTime()))
      throw new TaskFileError(`${where}: option runAt = ${describeValue(given.runAt)}: must be an ISO 8601 date or epoch milliseconds`);
    given.runAt = runAt;
  }
  // The command line's delay gives way to the file's runAt, as the file's options win.
  const base = given.runAt === undefined ? defaults : Object.fromEntries(Object.entries(defaults).filter(([k]) => k !== 'delayMs'));
  const task = { name, args, options: { ...base, ...given } } as NewTask;
  try {
    checkTasks([task]);
  } catch (error) {
    throw new TaskFileError(`${where}: ${(error as Error).message.replace(/^task 0( \([^)]*\))?: /, '')}`);
  }
  return task;
}

async function* readLines(path: string, fromLine: number, defaults: EnqueueOptions): AsyncGenerator<Line> {
  const name = path === '-' ? 'stdin' : path;
  const input = path === '-' ? process.stdin : createReadStream(path);
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  let n = 0;
  for await (const text of lines) {
    n++;
    if (n < fromLine || text.trim() === '') continue;
    yield { line: n, task: parseTaskLine(`${name} line ${n}`, text, defaults) };
  }
}

export interface FileEnqueued {
  /** Tasks the store took (duplicates of pending unique keys included). */
  readonly enqueued: number;
  readonly duplicates: number;
  /** The last line read, 0 when the file held no task. */
  readonly lastLine: number;
}

/**
 * Enqueues a task file in batches. A file (not stdin) is read once to check
 * every line first, so a bad line means nothing is enqueued. Stdin cannot be
 * read twice: a bad line there, or a store that fails part way in either
 * case, stops with an error that says how many tasks were enqueued and the
 * line to resume from (`--from-line`).
 */
export async function enqueueFile(
  store: TaskStore,
  path: string,
  defaults: EnqueueOptions,
  fromLine: number,
  onProgress: (enqueued: number) => void = () => {},
): Promise<FileEnqueued> {
  if (path !== '-') {
    try {
      for await (const _ of readLines(path, fromLine, defaults));
    } catch (error) {
      if (error instanceof TaskFileError) throw new TaskFileError(`${error.message}\nnothing enqueued`);
      throw error;
    }
  }
  let enqueued = 0;
  let duplicates = 0;
  let lastLine = 0;
  let batch: Line[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    try {
      const results = await store.enqueue(batch.map((l) => l.task));
      duplicates += results.filter((r) => r.duplicate).length;
    } catch (error) {
      const first = batch[0]?.line ?? fromLine;
      throw new TaskFileError(
        `the store refused lines ${first}–${batch.at(-1)?.line}: ${(error as Error).message}\n${stopped(enqueued, first, 'resume')}`,
      );
    }
    enqueued += batch.length;
    batch = [];
    onProgress(enqueued);
  };
  try {
    for await (const l of readLines(path, fromLine, defaults)) {
      batch.push(l);
      lastLine = l.line;
      if (batch.length === FILE_BATCH) await flush();
    }
  } catch (error) {
    if (!(error instanceof TaskFileError) || enqueued + batch.length === 0) throw error;
    // A bad line on stdin: what came before it goes in, and the error says where to go on.
    const bad = Number(/ line (\d+):/.exec(error.message)?.[1] ?? fromLine);
    await flush();
    throw new TaskFileError(`${error.message}\n${stopped(enqueued, bad, 'fix it and resume')}`);
  }
  await flush();
  return { enqueued, duplicates, lastLine };
}

const stopped = (enqueued: number, line: number, then: string) =>
  `enqueued ${enqueued} task${enqueued === 1 ? '' : 's'} before line ${line}; ${then} with --from-line ${line}`;
