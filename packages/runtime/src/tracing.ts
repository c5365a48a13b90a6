import { createRequire } from 'node:module';
import type * as Otel from '@opentelemetry/api';

/**
 * OpenTelemetry, when the application has it: `@opentelemetry/api` is an
 * optional peer, loaded on first use. Without it, or without an SDK
 * registered, every function here is a no-op and costs a map lookup.
 * Trace context crosses processes (a task row, a wire message) as a W3C
 * `traceparent` string, formatted and parsed here, so it does not depend on
 * which propagator the application configured.
 */
let api: typeof Otel | null | undefined;

function otel(): typeof Otel | undefined {
  if (api === undefined) {
    try {
      // The API keeps its registered SDK on globalThis, so this copy sees the one the application set up.
      api = createRequire(import.meta.url)('@opentelemetry/api') as typeof Otel;
    } catch {
      api = null;
    }
  }
  return api ?? undefined;
}

/** The instrumentation scope of Stagefabric's spans. */
export const TRACER_NAME = '@stagefabric';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** Whether `value` is a W3C traceparent this module writes and accepts (version 00, non-zero ids). */
export function isTraceparent(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const m = TRACEPARENT.exec(value);
  return m !== null && !/^0+$/.test(m[1] as string) && !/^0+$/.test(m[2] as string);
}

/** A span in progress; `traceparent` is undefined when nothing records it (no SDK, or not sampled). */
export interface TraceSpan {
  readonly traceparent: string | undefined;
  setAttribute(name: string, value: string | number | boolean | readonly string[]): void;
  /** Records an error on the span and sets its status to error. */
  fail(error: unknown): void;
  /** Calls `fn` with this span active, so spans started inside it (through a context manager the application registered) are its children. */
  within<T>(fn: () => T): T;
  end(): void;
}

export interface StartSpanOptions {
  readonly kind: 'producer' | 'consumer' | 'internal';
  /** The parent, as a traceparent from another process; otherwise the active context. */
  readonly parent?: string | undefined;
  /** Spans this one follows from without being their child (the enqueue of a task, its first attempt). */
  readonly links?: readonly (string | undefined)[];
  /** Called only when the span is traced, so an untraced span costs no attribute object. */
  readonly attributes?: () => Readonly<Record<string, string | number | boolean | readonly string[]>>;
}

const NOT_TRACED: TraceSpan = { traceparent: undefined, setAttribute() {}, fail() {}, within: (fn) => fn(), end() {} };

function spanContextOf(traceparent: string): Otel.SpanContext | undefined {
  if (!isTraceparent(traceparent)) return undefined;
  const [, traceId, spanId, flags] = traceparent.split('-') as [string, string, string, string];
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & 1, isRemote: true };
}

/** The API's no-op provider: what its global provider delegates to while no SDK is registered. */
let noopProvider: Otel.TracerProvider | undefined;

/** Whether an SDK is registered: without one, spans are skipped before anything is allocated for them. */
function traced(o: typeof Otel): boolean {
  noopProvider ??= new o.ProxyTracerProvider().getDelegate();
  const provider = o.trace.getTracerProvider();
  return !(provider instanceof o.ProxyTracerProvider && provider.getDelegate() === noopProvider);
}

/** Starts a span; with no OpenTelemetry API loaded, or no SDK registered, a stand-in that does nothing. */
export function startSpan(name: string, options: StartSpanOptions): TraceSpan {
  const o = otel();
  if (o === undefined || !traced(o)) return NOT_TRACED;
  const parentContext = options.parent === undefined ? undefined : spanContextOf(options.parent);
  const ctx =
    parentContext === undefined
      ? options.parent === undefined
        ? o.context.active()
        : o.ROOT_CONTEXT
      : o.trace.setSpanContext(o.ROOT_CONTEXT, parentContext);
  const links: Otel.Link[] = [];
  for (const link of options.links ?? []) {
    const context = link === undefined ? undefined : spanContextOf(link);
    if (context !== undefined) links.push({ context });
  }
  const kind = { producer: o.SpanKind.PRODUCER, consumer: o.SpanKind.CONSUMER, internal: o.SpanKind.INTERNAL }[options.kind];
  // Asked for each span, not kept: a tracer kept would stay with a provider the application has since replaced.
  const span = o.trace
    .getTracer(TRACER_NAME)
    .startSpan(
      name,
      { kind, links, ...(options.attributes === undefined ? {} : { attributes: { ...options.attributes() } as Otel.Attributes }) },
      ctx,
    );
  const sc = span.spanContext();
  const recorded = span.isRecording() && o.isSpanContextValid(sc);
  return {
    traceparent: recorded ? `00-${sc.traceId}-${sc.spanId}-0${sc.traceFlags & 1}` : undefined,
    setAttribute: (key, value) => span.setAttribute(key, value as Otel.AttributeValue),
    fail(error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: o.SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
    },
    within: (fn) => o.context.with(o.trace.setSpan(o.context.active(), span), fn),
    end: () => span.end(),
  };
}
