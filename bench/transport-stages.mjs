// Stages for the transport benchmark, imported by agent processes.
import { consumer, producer } from '../packages/runtime/dist/index.js';

/** Integers up to `limit`, as fast as demand allows. */
export const source = producer({
  init: ({ limit }) => ({ state: { next: 0, limit } }),
  handleDemand(demand, state) {
    const n = Math.max(0, Math.min(demand, state.limit - state.next));
    const events = new Array(n);
    for (let i = 0; i < n; i++) events[i] = state.next + i;
    return { events, state: { ...state, next: state.next + n } };
  },
});

/** Counts events; prints one JSON line with the timing when `limit` arrived. Records each arrival time when `gaps`. */
export const sink = consumer({
  init: ({ limit, gaps = false }) => ({ state: { limit, gaps, count: 0, first: 0, times: [] } }),
  handleEvents(events, _from, state) {
    const now = performance.now();
    if (state.count === 0) state.first = now;
    state.count += events.length;
    if (state.gaps) state.times.push(now);
    if (state.count >= state.limit) {
      process.stdout.write(`${JSON.stringify({ count: state.count, ms: now - state.first, times: state.times })}\n`);
      return { stop: 'normal' };
    }
    return undefined;
  },
});
