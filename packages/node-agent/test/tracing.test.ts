import { resolve } from 'node:path';
import { context, SpanKind, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { MemoryFabric, MemoryTransport } from '@stagefabric/fabric';
import { startLater, type TaskStore } from '@stagefabric/tasks';
import { PGliteTaskStore } from '@stagefabric/tasks/pglite';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { Agent, parseTopology } from '../src/index.js';
import { runs } from './fixtures/task-runs.js';

const FIXTURES = resolve(import.meta.dirname, 'fixtures/topology.yaml');
const silent = pino({ level: 'silent' });
const exporter = new InMemorySpanExporter();
const contextManager = new AsyncLocalStorageContextManager();
const agents: Agent[] = [];
const stores: TaskStore[] = [];

// The application's side: an SDK with an in-memory exporter, and a context manager so active spans nest.
beforeAll(() => {
  context.setGlobalContextManager(contextManager.enable());
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
});
afterAll(() => {
  trace.disable();
  context.disable();
});
afterEach(async () => {
  for (const a of agents.splice(0)) await a.stop();
  for (const s of stores.splice(0)) await s.close();
  runs.length = 0;
  exporter.reset();
});

// The producer on node a, the runner on node b: every task crosses the (in-process, encoded) wire.
const TOPOLOGY = `
tasks: { handlers: ./task-handlers.ts }
stages:
  tasks: { module: stagefabric:task-producer, args: { pollIntervalMs: 50 }, nodes: [a] }
  runner:
    module: stagefabric:task-runner
    args: { backoff: { baseMs: 10, maxMs: 20 } }
    nodes: [b]
    subscribe: [{ to: tasks, maxDemand: 4 }]
`;

const spanId = (s: ReadableSpan) => s.spanContext().spanId;
const linked = (s: ReadableSpan) => s.links.map((l) => l.context.spanId);

describe('tracing with @opentelemetry/api (the SDK the application brings)', () => {
  it('enqueue span, run spans linked to it and the retry to its first attempt, the fabric hop a parent and child across nodes', async () => {
    const store = new PGliteTaskStore();
    stores.push(store);
    await store.migrate();
    const fabric = new MemoryFabric();
    for (const node of ['a', 'b'])
      agents.push(
        await Agent.start({
          topology: parseTopology(TOPOLOGY, FIXTURES),
          node,
          logger: silent,
          taskStore: store,
          transport: new MemoryTransport({ fabric }),
          heartbeatMs: 200,
        }),
      );

    // The application enqueues while handling a request of its own.
    const tracer = trace.getTracer('app');
    const { id } = await tracer.startActiveSpan('POST /orders', async (request) => {
      try {
        return await startLater(store, 'flaky', { order: 7 }, { queue: 'default', maxAttempts: 3 });
      } finally {
        request.end();
      }
    });
    await waitFor(async () => (await store.get(id))?.state === 'success', 'the task to succeed on its second attempt');
    await waitFor(() => exporter.getFinishedSpans().filter((s) => s.name === 'run flaky').length === 2, 'both run spans to end');
    const spans = exporter.getFinishedSpans();

    const request = spans.find((s) => s.name === 'POST /orders') as ReadableSpan;
    const enqueue = spans.find((s) => s.name === 'enqueue flaky') as ReadableSpan;
    expect(enqueue.kind).toBe(SpanKind.PRODUCER);
    expect(enqueue.parentSpanContext?.spanId).toBe(spanId(request));
    expect(enqueue.attributes).toMatchObject({ 'stagefabric.task.name': 'flaky', 'stagefabric.task.queue': 'default' });

    const [first, second] = spans
      .filter((s) => s.name === 'run flaky')
      .sort((x, y) => Number(x.attributes['stagefabric.task.attempt']) - Number(y.attributes['stagefabric.task.attempt']));
    for (const [run, attempt] of [
      [first, 1],
      [second, 2],
    ] as const) {
      expect(run?.kind).toBe(SpanKind.CONSUMER);
      expect(run?.attributes).toMatchObject({
        'stagefabric.task.id': id,
        'stagefabric.task.name': 'flaky',
        'stagefabric.task.queue': 'default',
        'stagefabric.task.attempt': attempt,
        'stagefabric.node': 'b',
      });
    }
    // Each run follows from the enqueue; the retry also from the first attempt, which failed with its error.
    expect(linked(first as ReadableSpan)).toEqual([spanId(enqueue)]);
    expect(linked(second as ReadableSpan)).toEqual([spanId(enqueue), spanId(first as ReadableSpan)]);
    expect(first?.status).toMatchObject({ code: 2, message: 'the first attempt fails by design' });
    expect(second?.attributes['stagefabric.task.outcome']).toBe('success');

    // The hop: node a sends the claimed task, node b's receive is its child, in the same trace.
    const sends = spans.filter((s) => s.name === 'send tasks@a');
    const receives = spans.filter((s) => s.name === 'receive tasks@a');
    expect(sends.length).toBeGreaterThanOrEqual(2);
    expect(receives.length).toBe(sends.length);
    for (const receive of receives) {
      const send = sends.find((s) => spanId(s) === receive.parentSpanContext?.spanId);
      expect(send, 'each receive on b has a send on a as its parent').toBeDefined();
      expect(receive.spanContext().traceId).toBe(send?.spanContext().traceId);
      expect(send?.kind).toBe(SpanKind.PRODUCER);
      expect(receive.kind).toBe(SpanKind.CONSUMER);
      expect(send?.attributes['stagefabric.node']).toBe('a');
      expect(receive.attributes['stagefabric.node']).toBe('b');
    }
  }, 120_000);
});
