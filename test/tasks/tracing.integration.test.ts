import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SpanKind, trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { startLater } from '@stagefabric/tasks';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { killAll, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';

/**
 * The span tree across processes: this process enqueues (its own SDK), the
 * producer's agent and the runner's agent each export to a file of their own
 * (an SDK registered with `node --import`, as an application would), and the
 * tasks cross Redis between them.
 */
const databaseUrl = inject('databaseUrl');
const redisUrl = inject('redisUrl');
const exporter = new InMemorySpanExporter();

interface Exported {
  readonly name: string;
  readonly kind: number;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | null;
  readonly links: string[];
  readonly attributes: Record<string, unknown>;
  readonly status: { code: number; message?: string };
}

const spansIn = (file: string): Exported[] =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Exported)
    : [];

beforeAll(() => {
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
});
afterAll(() => {
  trace.disable();
});
afterEach(async () => {
  await killAll();
});

describe('tracing across two agent processes over Redis', () => {
  it('the run on the runner node links to the enqueue here and the retry to its first attempt; the hop is parent and child', async () => {
    const schema = `sf_trace${randomUUID().slice(0, 8)}`;
    const store = new PostgresTaskStore({ url: databaseUrl, schema });
    await store.migrate();
    const fabric = await testFabric(redisUrl);
    try {
      const topology = await fabric.topology(
        stringify({
          tasks: { handlers: join(ROOT, 'test/tasks/tracing-handlers.mjs'), schema },
          stages: {
            tasks: { module: 'stagefabric:task-producer', args: { pollIntervalMs: 100 }, nodes: ['p'] },
            runner: {
              module: 'stagefabric:task-runner',
              args: { backoff: { baseMs: 20, maxMs: 50 } },
              nodes: ['r'],
              subscribe: [{ to: 'tasks', maxDemand: 4 }],
            },
          },
        }),
      );
      const env = (node: string) => ({
        DATABASE_URL: databaseUrl,
        TRACE_FILE: fabric.file(`spans-${node}.jsonl`),
        NODE_OPTIONS: `--import ${join(ROOT, 'test/tasks/tracing-setup.mjs')}`,
      });
      fabric.agent(topology, 'p', env('p'));
      fabric.agent(topology, 'r', env('r'));

      const { id } = await startLater(store, 'flaky', {}, { maxAttempts: 3 });
      await waitFor(async () => (await store.get(id))?.state === 'success', 'the task to succeed on its second attempt', 60_000);
      const onP = () => spansIn(fabric.file('spans-p.jsonl'));
      const onR = () => spansIn(fabric.file('spans-r.jsonl'));
      await waitFor(() => onR().filter((s) => s.name === 'run flaky').length === 2, 'both run spans exported by r');

      const enqueue = exporter.getFinishedSpans().find((s) => s.name === 'enqueue flaky');
      expect(enqueue?.kind).toBe(SpanKind.PRODUCER);
      const runs = onR()
        .filter((s) => s.name === 'run flaky')
        .sort((a, b) => Number(a.attributes['stagefabric.task.attempt']) - Number(b.attributes['stagefabric.task.attempt']));
      const [first, second] = runs;
      expect(first?.attributes).toMatchObject({ 'stagefabric.task.id': id, 'stagefabric.task.attempt': 1, 'stagefabric.node': 'r' });
      expect(first?.links).toEqual([enqueue?.spanContext().spanId]);
      expect(first?.status).toMatchObject({ code: 2, message: 'the first attempt fails by design' });
      expect(second?.attributes).toMatchObject({ 'stagefabric.task.attempt': 2, 'stagefabric.task.outcome': 'success' });
      expect(second?.links).toEqual([enqueue?.spanContext().spanId, first?.spanId]);

      // Each batch the producer's node sent is received on the runner's node as a child of its send span.
      const sends = onP().filter((s) => s.name === 'send tasks@p');
      const receives = onR().filter((s) => s.name === 'receive tasks@p');
      expect(sends.length).toBeGreaterThanOrEqual(2);
      expect(receives.length).toBeGreaterThanOrEqual(2);
      for (const receive of receives) {
        const send = sends.find((s) => s.spanId === receive.parentSpanId);
        expect(send, 'a send span on p as the parent of each receive on r').toBeDefined();
        expect(receive.traceId).toBe(send?.traceId);
        expect(send?.attributes['stagefabric.node']).toBe('p');
        expect(receive.attributes['stagefabric.node']).toBe('r');
      }
    } finally {
      await killAll();
      await store.close();
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    }
  }, 120_000);
});
