// What an application's `node --import ./tracing.mjs` does: registers an
// OpenTelemetry SDK before anything else runs. Here its exporter appends each
// finished span to TRACE_FILE as a JSON line, for the test to read.
import { appendFileSync } from 'node:fs';
import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';

const file = process.env.TRACE_FILE;
const exporter = {
  export(spans, done) {
    const lines = spans.map((s) =>
      JSON.stringify({
        name: s.name,
        kind: s.kind,
        traceId: s.spanContext().traceId,
        spanId: s.spanContext().spanId,
        parentSpanId: s.parentSpanContext?.spanId ?? null,
        links: s.links.map((l) => l.context.spanId),
        attributes: s.attributes,
        status: s.status,
      }),
    );
    appendFileSync(file, `${lines.join('\n')}\n`);
    done({ code: 0 });
  },
  shutdown: async () => {},
};
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
