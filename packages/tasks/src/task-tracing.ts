import { isTraceparent, startSpan, type TraceSpan } from '@stagefabric/runtime';
import type { CheckedTask } from './task-input.js';
import type { ClaimedTask } from './task-store.js';

/**
 * Task spans, with `@opentelemetry/api` when the application has it (see the
 * runtime's tracing.ts): an enqueue span whose context every task of the
 * batch keeps, and a run span per attempt, linked to it and, on a retry, to
 * the task's first attempt.
 */

/** Runs a batch's write in an `enqueue` span; the write stores the span's traceparent (null when nothing records it) with each task. */
export async function tracedEnqueue<T>(
  checked: readonly CheckedTask[],
  write: (traceparent: string | undefined) => Promise<T>,
): Promise<T> {
  const first = checked[0];
  const names = [...new Set(checked.map((t) => t.name))];
  const queues = [...new Set(checked.map((t) => t.queue))];
  const span = startSpan(names.length === 1 ? `enqueue ${names[0]}` : 'enqueue', {
    kind: 'producer',
    attributes: () => ({
      'messaging.system': 'stagefabric',
      'messaging.operation.type': 'send',
      'messaging.batch.message_count': checked.length,
      'stagefabric.task.name': names.length === 1 && first !== undefined ? first.name : names,
      'stagefabric.task.queue': queues.length === 1 && first !== undefined ? first.queue : queues,
    }),
  });
  try {
    return await write(span.traceparent);
  } catch (error) {
    span.fail(error);
    throw error;
  } finally {
    span.end();
  }
}

/** A claim's trace fields from a store's row, each only when well-formed. */
export function traceFields(traceparent: unknown, firstRunTraceparent: unknown): { traceparent?: string; firstRunTraceparent?: string } {
  return {
    ...(isTraceparent(traceparent) ? { traceparent } : {}),
    ...(isTraceparent(firstRunTraceparent) ? { firstRunTraceparent } : {}),
  };
}

/** The span of one attempt's run: linked to the enqueue and, past the first attempt, to the first attempt's run. */
export function startRunSpan(task: ClaimedTask, owner: string): TraceSpan {
  return startSpan(`run ${task.name}`, {
    kind: 'consumer',
    links: [task.traceparent, task.attempt > 1 ? task.firstRunTraceparent : undefined],
    attributes: () => ({
      'messaging.system': 'stagefabric',
      'messaging.operation.type': 'process',
      'messaging.destination.name': task.queue,
      'stagefabric.task.id': task.id,
      'stagefabric.task.name': task.name,
      'stagefabric.task.queue': task.queue,
      'stagefabric.task.attempt': task.attempt,
      // The lease owner is `node/nonce` on an agent.
      'stagefabric.node': owner.split('/')[0] ?? owner,
      'stagefabric.task.owner': owner,
    }),
  });
}
