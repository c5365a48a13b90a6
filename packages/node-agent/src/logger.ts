import { type Logger, type LoggerOptions, pino } from 'pino';

export type { Logger };

/** Connection strings carry passwords; these paths are masked wherever they appear in a log line. */
const REDACT = ['redisUrl', 'databaseUrl', '*.redisUrl', '*.databaseUrl', 'password', '*.password'];

export interface CreateLoggerOptions {
  readonly node: string;
  readonly level?: string;
  /** Where lines go; stderr by default, so a stage's own stdout stays clean. */
  readonly destination?: NodeJS.WritableStream;
}

/** The agent's pino logger, bound to its node; stages log through children bound to `{ stage }`. */
export function createLogger(options: CreateLoggerOptions): Logger {
  const config: LoggerOptions = {
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    base: { node: options.node },
    redact: { paths: REDACT, censor: '[redacted]' },
  };
  return pino(config, (options.destination ?? process.stderr) as pino.DestinationStream);
}
