import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { startLater, startTaskWorker, type TaskStore } from '../src/index.js';

const TP = (span: string) => `00-4bf92f3577b34da6a3ce929d0e0e4736-${span}-01`;

/**
 * What a store keeps of a task's trace context: the enqueue span's
 * traceparent, given back with every claim, and the first retried run's,
 * kept once and given back with the attempts after it.
 */
export function taskTracingSuite(label: string, open: () => Promise<TaskStore>): void {
  // An embedded PGlite store takes many seconds to start on a loaded machine, one per test.
  describe(`trace context of tasks on ${label}`, { timeout: 90_000 }, () => {
    const exporter = new InMemorySpanExporter();
    const stores: TaskStore[] = [];
    beforeAll(() => {
      context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
      trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
    });
    afterAll(() => {
      trace.disable();
      context.disable();
    });
    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close();
      exporter.reset();
    });

    it('runs the handler inside its run span, so its own spans are children of it', async () => {
      const store = await open();
      stores.push(store);
      const worker = await startTaskWorker({
        store,
        pollIntervalMs: 20,
        handlers: { traced: () => trace.getTracer('app').startActiveSpan('charge card', (span) => span.end()) },
      });
      try {
        const { id } = await startLater(store, 'traced', {});
        await waitFor(async () => (await store.get(id))?.state === 'success', 'the task to succeed');
        await waitFor(() => exporter.getFinishedSpans().some((s) => s.name === 'run traced'), 'the run span to end');
      } finally {
        await worker.stop();
      }
      const spans = exporter.getFinishedSpans();
      const run = spans.find((s) => s.name === 'run traced');
      const enqueue = spans.find((s) => s.name === 'enqueue traced');
      expect(spans.find((s) => s.name === 'charge card')?.parentSpanContext?.spanId).toBe(run?.spanContext().spanId);
      expect(run?.links.map((l) => l.context.spanId)).toEqual([enqueue?.spanContext().spanId]);
      expect(run?.attributes).toMatchObject({ 'stagefabric.task.attempt': 1, 'stagefabric.task.outcome': 'success' });
    });

    it("stores the enqueue span's context with each task of the batch and keeps the first retried run's", async () => {
      const store = await open();
      stores.push(store);
      const [a, b] = await trace.getTracer('app').startActiveSpan('request', (span) =>
        store
          .enqueue([
            { name: 'traced', args: 1 },
            { name: 'traced', args: 2 },
          ])
          .finally(() => span.end()),
      );
      const enqueue = exporter.getFinishedSpans().find((s) => s.name === 'enqueue traced');
      const request = exporter.getFinishedSpans().find((s) => s.name === 'request');
      expect(enqueue?.parentSpanContext?.spanId).toBe(request?.spanContext().spanId);
      expect(enqueue?.attributes['messaging.batch.message_count']).toBe(2);
      const sent = `00-${enqueue?.spanContext().traceId}-${enqueue?.spanContext().spanId}-01`;

      const claimed = await store.claim('default', 2, 'node-1/x', 30_000);
      expect(claimed.map((c) => [c.id, c.traceparent, c.firstRunTraceparent])).toEqual([
        [a?.id, sent, undefined],
        [b?.id, sent, undefined],
      ]);
      const first = claimed.find((c) => c.id === a?.id);
      if (first === undefined) throw new Error('claimed nothing');
      const retry = (c: typeof first, firstRun: string) =>
        store.complete([
          {
            id: c.id,
            attempt: c.attempt,
            claimant: c.claimant,
            status: 'error',
            error: 'again',
            retryAt: new Date(),
            firstRunTraceparent: firstRun,
          },
        ]);
      expect(await retry(first, TP('00f067aa0ba90201'))).toEqual([first.id]);
      const claimAgain = async () => {
        let again: typeof first | undefined;
        await waitFor(async () => {
          again = (await store.claim('default', 1, 'node-1/x', 30_000)).find((c) => c.id === first.id);
          return again !== undefined;
        }, `task ${first.id} to be claimed again`);
        return again as typeof first;
      };
      const second = await claimAgain();
      expect(second).toMatchObject({ attempt: 2, traceparent: sent, firstRunTraceparent: TP('00f067aa0ba90201') });
      // A later attempt's run does not replace the first one's.
      await retry(second, TP('00f067aa0ba90202'));
      const third = await claimAgain();
      expect(third).toMatchObject({ attempt: 3, traceparent: sent, firstRunTraceparent: TP('00f067aa0ba90201') });
    });
  });
}
