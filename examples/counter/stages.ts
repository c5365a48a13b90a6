/**
 * The counter from the GenStage task-runner tutorial: a producer that answers
 * any demand with the next integers, and printers that show which replica got
 * which event. `limit` makes the demo end by itself.
 */
import { consumer, producer } from '@stagefabric/runtime';

export interface CounterArgs {
  readonly start?: number;
  readonly limit?: number;
  readonly broadcast?: boolean;
}

export const counter = producer<{ next: number; limit: number }, number, CounterArgs | undefined>({
  init: (args) => ({
    state: { next: args?.start ?? 0, limit: args?.limit ?? Number.POSITIVE_INFINITY },
    ...(args?.broadcast ? { dispatcher: { type: 'broadcast' as const } } : {}),
  }),
  handleDemand(demand, state) {
    const count = Math.max(0, Math.min(demand, state.limit - state.next));
    const events = Array.from({ length: count }, (_, i) => state.next + i);
    const next = state.next + count;
    // Stop once the last event is out; consumers see the producer exit normally.
    return next >= state.limit ? { events, state: { ...state, next }, stop: 'normal' } : { events, state: { ...state, next } };
  },
});

export const printer = consumer<{ seen: number }, number, void>({
  init: () => ({ state: { seen: 0 } }),
  handleEvents(events, _from, state, ctx) {
    for (const [i, event] of events.entries()) console.log(`${ctx.self.label} got ${event} (its event #${state.seen + i + 1})`);
    return { state: { seen: state.seen + events.length } };
  },
});
