import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import type { TaskStore } from '../src/index.js';

const TP = (span: string) => `00-4bf92f3577b34da6a3ce929d0e0e4736-${span}-01`;

/**
 * What a store keeps of a task's trace context: the enqueue span's
 * traceparent, given back with every claim, and the first retried run's,
 * kept once and given back with the attempts after it.
 */
export function taskTracingSuite(label: string, open: () => Promise<TaskStore>): void {
  describe(`trace context of tasks on ${label}`, () => {
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
