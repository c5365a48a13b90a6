import { redactCredentials, redactError } from '@stagefabric/runtime';
import { type Logger, type LoggerOptions, pino } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** Connection strings carry passwords; these paths are masked wherever they appear in a log line. */
const REDACT = ['redisUrl', 'databaseUrl', 'url', '*.redisUrl', '*.databaseUrl', '*.url', 'password', '*.password'];

export interface CreateLoggerOptions {
  readonly node: string;
  readonly level?: string;
  /** Where lines go; stderr by default, so a stage's own stdout stays clean. */
  readonly destination?: NodeJS.WritableStream;
  /** 'json' (pino's lines) or 'pretty' (for a person). Default: pretty on a terminal, json otherwise; LOG_FORMAT overrides. */
  readonly format?: 'json' | 'pretty';
  /** Credentials (passwords, the fabric's secret) masked wherever they appear in a message or an error. */
  readonly secrets?: readonly string[];
}

/** The agent's pino logger, bound to its node; log lines about a stage carry `{ stage }`. */
export function createLogger(options: CreateLoggerOptions): Logger {
  const destination = options.destination ?? process.stderr;
  const secrets = options.secrets ?? [];
  const envFormat = process.env.LOG_FORMAT;
  const format =
    options.format ??
    (envFormat === 'json' || envFormat === 'pretty' ? envFormat : (destination as { isTTY?: boolean }).isTTY ? 'pretty' : 'json');
  const config: LoggerOptions = {
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    base: { node: options.node },
    redact: { paths: REDACT, censor: '[redacted]' },
    // An error's message and stack lose any credential, and a Redis client's command its arguments (AUTH's are a password).
    serializers: { err: (error: unknown) => pino.stdSerializers.err(redactError(error, secrets)) },
    hooks: {
      logMethod(args, method) {
        method.apply(this, args.map((a) => (typeof a === 'string' ? redactCredentials(a, secrets) : a)) as Parameters<typeof method>);
      },
    },
  };
  const stream =
    format === 'pretty'
      ? pretty({ destination: destination as NodeJS.WritableStream & { fd?: number }, sync: true, translateTime: 'HH:MM:ss.l' })
      : destination;
  return pino(config, stream as pino.DestinationStream);
}
