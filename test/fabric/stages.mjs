// Stages for the multi-process fabric tests. Plain JS so agents import it without a build step.
// Consumers append what they handle to a file with a synchronous write, so a kill -9 loses no record.
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { consumer, producer, producerConsumer } from '../../packages/runtime/dist/index.js';

const record = (file, value) => appendFileSync(file, `${JSON.stringify(value)}\n`);

/** Integers 0..limit-1, never beyond demand; `extra` emits that many more per call (to fill the buffer). */
export const counter = producer({
  init: ({ limit, extra = 0, bufferSize, bufferKeep, dispatcher, log }) => ({
    state: { next: 0, limit, extra, log },
    ...(bufferSize === undefined ? {} : { bufferSize }),
    ...(bufferKeep === undefined ? {} : { bufferKeep }),
    ...(dispatcher === undefined ? {} : { dispatcher }),
  }),
  handleDemand(demand, state) {
    const n = Math.max(0, Math.min(demand + state.extra, state.limit - state.next));
    if (state.log) record(state.log, { demand });
    return { events: Array.from({ length: n }, (_, i) => state.next + i), state: { ...state, next: state.next + n } };
  },
});

/** Emits `burst` numbered events every `everyMs`, whatever the demand, like a sensor: the excess waits in its buffer. */
export const ticker = producer({
  init: ({ burst, everyMs, bufferSize, bufferKeep }, ctx) => {
    ctx.sendAfter(everyMs, 'tick');
    return { state: { next: 0, burst, everyMs }, bufferSize, bufferKeep };
  },
  handleDemand: () => undefined,
  handleInfo(message, state, ctx) {
    if (message !== 'tick') return undefined;
    ctx.sendAfter(state.everyMs, 'tick');
    const events = Array.from({ length: state.burst }, (_, i) => state.next + i);
    return { events, state: { ...state, next: state.next + state.burst } };
  },
});

/** Counter whose partition dispatcher sends even numbers to partition "even" and odd to "odd". */
export const parity = producer({
  init: ({ limit }) => ({
    state: { next: 0, limit },
    dispatcher: { type: 'partition', partitions: ['even', 'odd'], hash: (n) => (n % 2 === 0 ? 'even' : 'odd') },
  }),
  handleDemand(demand, state) {
    const n = Math.max(0, Math.min(demand, state.limit - state.next));
    return { events: Array.from({ length: n }, (_, i) => state.next + i), state: { ...state, next: state.next + n } };
  },
});

export const double = producerConsumer({
  init: () => ({ state: null }),
  handleEvents: (events) => ({ events: events.map((x) => x * 2) }),
});

/** Records each batch it handles (and each cancel it sees) to `file`, after `delayMs`. */
export const recorder = consumer({
  init: ({ file, delayMs = 0 }) => {
    record(file, { started: process.pid });
    return { state: { file, delayMs } };
  },
  async handleEvents(events, _from, state) {
    if (state.delayMs > 0) await sleep(state.delayMs);
    record(state.file, { pid: process.pid, events });
  },
  handleCancel(info, _sub, state) {
    record(state.file, {
      pid: process.pid,
      cancel: { kind: info.kind, reason: typeof info.reason === 'string' ? info.reason : String(info.reason?.message ?? info.reason) },
    });
  },
});
