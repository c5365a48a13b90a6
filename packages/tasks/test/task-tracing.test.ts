import { expect, it } from 'vitest';
import { PGliteTaskStore } from '../src/pglite-task-store.js';
import { claimedTaskProblem } from '../src/task-runner.js';
import { taskTracingSuite } from './task-tracing.suite.js';

taskTracingSuite('embedded PGlite', async () => {
  const store = new PGliteTaskStore();
  await store.migrate();
  return store;
});

it('refuses a claimed task from the wire whose trace context is not a traceparent', () => {
  const task = {
    id: '1',
    queue: 'q',
    name: 'n',
    claimant: 'a/x',
    attempt: 1,
    maxAttempts: 1,
    timeoutMs: 1,
    enqueuedAt: new Date(),
    leaseExpiresAt: new Date(),
  };
  const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  expect(claimedTaskProblem({ ...task, traceparent: tp, firstRunTraceparent: tp })).toBeUndefined();
  expect(claimedTaskProblem({ ...task, traceparent: 'x' })).toBe('traceparent must be a W3C traceparent when present');
  expect(claimedTaskProblem({ ...task, firstRunTraceparent: 7 })).toBe('firstRunTraceparent must be a W3C traceparent when present');
});
