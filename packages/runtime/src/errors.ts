/**
 * One error family for every Stagefabric package. `code` is stable and
 * machine-readable; `retryable` says whether the same operation may succeed
 * if tried again. Each code is described once, here: whether it means bad
 * input (the caller must change something: `stagectl` exits 2) or an
 * operational failure (exit 1), and what it is about.
 */
export const ERROR_CODES = {
  SF_BAD_OPTION: { input: true, meaning: 'an option has a value outside its rule (the message names option, value and rule)' },
  SF_BAD_RETURN: { input: true, meaning: 'a stage callback returned the wrong shape' },
  SF_BAD_ASK: { input: true, meaning: 'demand asked for (or a count reported handled) is not a non-negative integer' },
  SF_BAD_TOPOLOGY: { input: true, meaning: 'a topology file is invalid (each mistake with FILE:LINE:COLUMN)' },
  SF_BAD_STAGE_MODULE: { input: true, meaning: 'a stage or handlers module cannot be loaded or exports the wrong thing' },
  SF_BAD_TASK: { input: true, meaning: 'a task was refused at enqueue (its args or options); nothing of the batch was stored' },
  SF_BAD_SCHEDULE: {
    input: true,
    meaning: 'a schedule was refused (its name, cron, tz, backfill or task); nothing of the batch was stored',
  },
  SF_BAD_USAGE: { input: true, meaning: 'a command line that stagectl cannot run' },
  SF_BAD_WIRE_MESSAGE: { input: true, meaning: 'a fabric message that is malformed, oversized or not authentic; it is dead-lettered' },
  SF_UNSUPPORTED: {
    input: true,
    meaning: 'the task store cannot do what was asked (such as per-group limits on BullMQ); the message names the store and the feature',
  },
  SF_NO_HANDLER: { input: true, meaning: 'a task names a handler that is not registered' },
  SF_NODE_NAME_TAKEN: { input: true, meaning: 'a live node of the fabric already has this node name: give the agent another --node' },
  SF_NO_STAGE: { input: false, meaning: 'no running stage has that name or ref' },
  SF_NAME_TAKEN: { input: false, meaning: 'a stage of that name is already running' },
  SF_ALREADY_SUBSCRIBED: { input: true, meaning: 'a consumer subscribed a second time to the same broadcast producer' },
  SF_NOT_PRODUCER: { input: false, meaning: 'the stage is not a producer' },
  SF_NOT_CONSUMER: { input: false, meaning: 'the stage is not a consumer' },
  SF_CALL_TIMEOUT: { input: false, meaning: 'a call got no reply in time' },
  SF_STAGE_EXITED: { input: false, meaning: 'the stage (or a remote one) exited' },
  SF_CALLBACK_THREW: { input: false, meaning: 'a stage callback threw' },
  SF_RESTART_INTENSITY: { input: false, meaning: 'a supervisor restarted children too often and gave up' },
  SF_TASK_TIMEOUT: { input: false, meaning: 'a task ran past its timeout' },
  SF_BAD_TASK_ARGS: { input: true, meaning: "a task's args fail its handler's schema (each bad field named by its path); never retried" },
  SF_LEASE_LOST: { input: false, meaning: 'a task run lost its lease (the store no longer holds the task for it): the run is aborted' },
} as const satisfies Record<string, { readonly input: boolean; readonly meaning: string }>;

export type FabricErrorCode = keyof typeof ERROR_CODES;

export interface FabricErrorOptions {
  readonly retryable?: boolean;
  readonly cause?: unknown;
  readonly stage?: string;
}

export class FabricError extends Error {
  override readonly name: string = 'FabricError';
  readonly code: FabricErrorCode;
  readonly retryable: boolean;
  readonly stage: string | undefined;

  constructor(code: FabricErrorCode, message: string, options: FabricErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.stage = options.stage;
  }

  /** Whether this error means bad input, which only a change by the caller can fix. */
  get isInputError(): boolean {
    return ERROR_CODES[this.code].input;
  }
}

export function isFabricError(value: unknown, code?: FabricErrorCode): value is FabricError {
  return value instanceof FabricError && (code === undefined || value.code === code);
}

/** Renders any value for an error message, bounded so a huge value cannot flood a log. */
export function describeValue(value: unknown, maxChars = 200): string {
  let text: string;
  if (typeof value === 'function') text = `[function ${value.name || 'anonymous'}]`;
  else if (typeof value === 'bigint') text = `${value}n`;
  else if (value instanceof Error) text = `${value.name}: ${value.message}`;
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > maxChars ? `${text.slice(0, maxChars)}… (${text.length} chars)` : text;
}
