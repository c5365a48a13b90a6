import { parseArgs } from 'node:util';
import { createLogger, startConsole } from '@stagefabric/node-agent';
import type { TaskStore } from '@stagefabric/tasks';
import { openStoreFor, STORE_OPTIONS, UsageError } from './tasks-commands.js';

/** The console's default port when run on its own. */
const DEFAULT_PORT = 9470;

/** A port option's value, or undefined when not given. */
export function consolePort(option: string, value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`${option} must be a port number, got ${value}`);
  return port;
}

/**
 * `stagectl console`: the web console on its own, reading the fabric at
 * REDIS_URL and the task store the store options name, until SIGINT or
 * SIGTERM.
 */
export async function consoleCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { ...STORE_OPTIONS, port: { type: 'string' }, host: { type: 'string' }, namespace: { type: 'string' } },
  });
  const port = consolePort('--port', values.port) ?? DEFAULT_PORT;
  const redisUrl = process.env.REDIS_URL || undefined;
  const hasStore = values.store !== undefined || values['data-dir'] !== undefined || (process.env.DATABASE_URL ?? '') !== '';
  if (redisUrl === undefined && !hasStore)
    throw new UsageError('console shows the fabric at REDIS_URL and the task store at DATABASE_URL: set at least one');
  const logger = createLogger({ node: 'console' });
  const store: TaskStore | undefined = hasStore ? await openStoreFor(values) : undefined;
  const web = await startConsole({
    port,
    ...(values.host === undefined ? {} : { host: values.host }),
    redisUrl,
    namespace: values.namespace ?? process.env.STAGEFABRIC_NAMESPACE ?? 'default',
    store,
    logger,
  });
  process.stdout.write(`console at ${web.url}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await web.close();
  await store?.close();
  return 0;
}
