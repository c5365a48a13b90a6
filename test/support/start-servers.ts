import type {} from 'vitest';
import type { TestProject } from 'vitest/node';
import { postgresForTests, redisForTests, type Server } from './servers.js';

declare module 'vitest' {
  export interface ProvidedContext {
    redisUrl: string;
    databaseUrl: string;
  }
}

/**
 * Integration tests get real Redis and PostgreSQL. A server that can be
 * neither found nor started fails the run: nothing is skipped.
 */
export default async function startServers(project: TestProject): Promise<() => Promise<void>> {
  const started: Server[] = [];
  try {
    const redis = await redisForTests();
    started.push(redis);
    const postgres = await postgresForTests();
    started.push(postgres);
    project.provide('redisUrl', redis.url);
    project.provide('databaseUrl', postgres.url);
    process.stdout.write(`integration servers: redis ${redis.url} (${redis.source}), postgres ${postgres.url} (${postgres.source})\n`);
  } catch (error) {
    for (const s of started) await s.stop();
    throw new Error(`integration tests need Redis and PostgreSQL: ${(error as Error).message}`);
  }
  return async () => {
    for (const s of started.reverse()) await s.stop();
  };
}
