/**
 * One error family for the whole fabric. `code` is stable and machine-readable;
 * `retryable` says whether the same operation may succeed if tried again.
 */
export type FabricErrorCode =
  | 'SF_BAD_RETURN'
  | 'SF_BAD_OPTION'
  | 'SF_BAD_ASK'
  | 'SF_NO_STAGE'
  | 'SF_NAME_TAKEN'
  | 'SF_ALREADY_SUBSCRIBED'
  | 'SF_NOT_PRODUCER'
  | 'SF_NOT_CONSUMER'
  | 'SF_CALL_TIMEOUT'
  | 'SF_STAGE_EXITED'
  | 'SF_CALLBACK_THREW'
  | 'SF_RESTART_INTENSITY'
  | 'SF_TASK_TIMEOUT';

export interface FabricErrorOptions {
  readonly retryable?: boolean;
  readonly cause?: unknown;
  readonly stage?: string;
}

export class FabricError extends Error {
  override readonly name = 'FabricError';
  readonly code: FabricErrorCode;
  readonly retryable: boolean;
  readonly stage: string | undefined;

  constructor(code: FabricErrorCode, message: string, options: FabricErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.stage = options.stage;
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
