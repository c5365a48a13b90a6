import { defineConfig } from 'vitest/config';

/**
 * Tests run the workspace packages' sources: the `source` export condition
 * maps `@stagefabric/*` to `src/*.ts`, so a test after an edit never runs a
 * stale build. Agent processes the integration tests spawn run the build
 * (`npm test` builds first).
 */
const sources = { resolve: { conditions: ['source'] }, ssr: { resolve: { conditions: ['source'] } } };

export default defineConfig({
  ...sources,
  test: {
    projects: [
      {
        ...sources,
        test: {
          name: 'unit',
          // PGlite starts in a few seconds on a loaded machine; nothing here waits on a fixed sleep.
          testTimeout: 30_000,
          include: ['packages/*/test/**/*.test.ts'],
          exclude: ['**/*.integration.test.ts', '**/node_modules/**'],
        },
      },
      {
        ...sources,
        test: {
          name: 'integration',
          include: ['packages/*/test/**/*.integration.test.ts', 'test/**/*.integration.test.ts'],
          globalSetup: ['test/support/start-servers.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          // Agents are separate processes; keep files serial so they do not fight for 2 cores.
          fileParallelism: false,
        },
      },
    ],
  },
});
