/**
 * The speed targets of issue 16, each a ratio of two figures measured in the
 * same run. A figure is named by its `figure` field; where the benchmark that
 * measures it names it one of several ways, each is listed, first found wins.
 */
import type { Figure } from './figures.js';

export interface Target {
  /** The ratio's figure name, e.g. `pg_store_vs_graphile_worker_best`. */
  name: string;
  what: string;
  numerator: readonly string[];
  denominator: readonly string[];
  /** `min`: the ratio must be at least `bound`; `max`: at most. */
  rule: 'min' | 'max';
  bound: number;
}

export const TARGETS: readonly Target[] = [
  {
    name: 'pg_store_vs_graphile_worker_best',
    what: 'PostgreSQL store tasks/s ≥ 2× graphile-worker at its best (localQueue, batched completion)',
    numerator: ['pg_store_tasks_per_s', 'stagefabric_postgres_process_per_s'],
    // Only a row run at graphile-worker's best (localQueue and batched completion) counts.
    denominator: ['graphile_worker_best_tasks_per_s'],
    rule: 'min',
    bound: 2,
  },
  {
    name: 'pg_store_p50_vs_graphile_worker_latency_setting',
    what: "PostgreSQL store enqueue→start p50 ≤ graphile-worker's best-latency setting (its defaults)",
    numerator: ['pg_store_start_p50_ms', 'pg_store_latency_p50_ms', 'stagefabric_postgres_latency_p50_ms'],
    denominator: ['graphile_worker_default_start_p50_ms', 'graphile_worker_defaults_latency_p50_ms'],
    rule: 'max',
    bound: 1,
  },
  {
    name: 'bullmq_store_vs_bare_worker',
    what: 'BullMQ store tasks/s ≥ 1× a bare BullMQ Worker at the same concurrency',
    numerator: ['bullmq_store_tasks_per_s', 'stagefabric_bullmq_process_per_s'],
    denominator: ['bullmq_worker_tasks_per_s', 'bullmq_worker_concurrency_50_process_per_s'],
    rule: 'min',
    bound: 1,
  },
  {
    name: 'fabric_vs_bare_streams',
    what: 'fabric between two agents ≥ 0.5× bare Redis Streams at the same batching',
    numerator: ['fabric_events_per_s'],
    denominator: ['bare_streams_events_per_s'],
    rule: 'min',
    bound: 0.5,
  },
  {
    name: 'fabric_round_trip_vs_bare_ping',
    what: 'one-event round trip p50 ≤ 2× a bare stream ping',
    numerator: ['fabric_round_trip_p50_ms'],
    denominator: ['bare_stream_ping_p50_ms'],
    rule: 'max',
    bound: 2,
  },
  {
    name: 'pipeline_vs_bare_loop',
    what: 'in-process pipeline ≥ 0.5× the bare loop',
    numerator: ['pipeline_events_per_s'],
    denominator: ['array_loop_events_per_s'],
    rule: 'min',
    bound: 0.5,
  },
];

export interface TargetResult {
  target: Target;
  /** Undefined when one of the two figures was not measured in this run. */
  ratio?: number;
  met?: boolean;
  numerator?: Figure;
  denominator?: Figure;
}

export function checkTargets(figures: readonly Figure[]): TargetResult[] {
  // Both figures of a ratio come from one benchmark when one measured both (the last such wins:
  // a later benchmark may re-measure a pair); otherwise the last figure of each name.
  const benches = [...new Set(figures.map((f) => f.bench))].reverse();
  const last = (names: readonly string[], bench?: string) =>
    names.map((n) => figures.findLast((f) => f.figure === n && (bench === undefined || f.bench === bench))).find((f) => f !== undefined);
  return TARGETS.map((target) => {
    const bench = benches.find((b) => last(target.numerator, b) && last(target.denominator, b));
    const numerator = last(target.numerator, bench);
    const denominator = last(target.denominator, bench);
    if (!numerator || !denominator || denominator.value === 0) return { target };
    const ratio = numerator.value / denominator.value;
    const met = target.rule === 'min' ? ratio >= target.bound : ratio <= target.bound;
    return { target, ratio, met, numerator, denominator };
  });
}
