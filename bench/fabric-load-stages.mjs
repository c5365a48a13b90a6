// Stages for the fabric load benchmark, imported by agent processes.
// `source` emits integers up to `limit`; `sink` tells the benchmark what it
// received through Redis (one MULTI per batch, not awaited): the count, the
// first and the last arrival time. With `delayMs`, each batch takes that long,
// as a slow consumer's would.
import { Redis } from 'ioredis';
import { consumer } from '../packages/runtime/dist/index.js';

export { source } from './transport-stages.mjs';

export const sink = consumer({
  init: ({ key, delayMs = 0 }) => ({ state: { key, delayMs, redis: new Redis(process.env.REDIS_URL) } }),
  handleEvents(events, _from, state) {
    const now = Date.now();
    state.redis
      .multi()
      .incrby(`${state.key}:count`, events.length)
      .set(`${state.key}:first`, now, 'NX')
      .set(`${state.key}:last`, now)
      .exec();
    if (state.delayMs > 0) return new Promise((resolve) => setTimeout(() => resolve(undefined), state.delayMs));
    return undefined;
  },
  terminate(_reason, state) {
    state.redis.disconnect();
  },
});
