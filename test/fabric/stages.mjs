// Stages for the multi-process fabric tests. Plain JS so agents import it without a build step.
// Consumers append what they handle to a file with a synchronous write, so a kill -9 loses no record.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { concurrentConsumer, consumer, producer, producerConsumer } from '../../packages/runtime/dist/index.js';

const record = (file, value) => appendFileSync(file, `${JSON.stringify(value)}\n`);

const records = (file) =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l))
    : [];

/**
 * Integers 0..limit-1, never beyond demand; `extra` emits that many more per call (to fill the buffer);
 * `stopAtLimit` exits normally with the last ones, as a finite source does.
 */
export const counter = producer({
  init: ({ limit, extra = 0, bufferSize, bufferKeep, dispatcher, log, stopAtLimit = false }) => ({
    state: { next: 0, limit, extra, log, stopAtLimit },
    ...(bufferSize === undefined ? {} : { bufferSize }),
    ...(bufferKeep === undefined ? {} : { bufferKeep }),
    ...(dispatcher === undefined ? {} : { dispatcher }),
  }),
  handleDemand(demand, state) {
    const n = Math.max(0, Math.min(demand + state.extra, state.limit - state.next));
    if (state.log) record(state.log, { demand });
    const events = Array.from({ length: n }, (_, i) => state.next + i);
    const next = { ...state, next: state.next + n };
    return state.stopAtLimit && next.next >= state.limit ? { events, state: next, stop: 'normal' } : { events, state: next };
  },
});

/**
 * A durable source: ids 0..limit-1 against demand. It re-sends an id its
 * sink has not recorded (in the sink's file, `handled`) within `redeliverMs`,
 * and a restarted one starts with every id not recorded yet, so an event lost
 * with a killed process still arrives.
 */
export const resender = producer({
  init: ({ limit, handled, redeliverMs = 3000 }, ctx) => {
    ctx.sendAfter(redeliverMs / 3, 'sweep');
    const done = new Set(records(handled).flatMap((r) => r.events ?? []));
    const todo = Array.from({ length: limit }, (_, i) => i).filter((i) => !done.has(i));
    return { state: { todo, owed: 0, inflight: new Map(), handled, redeliverMs } };
  },
  handleDemand(demand, state) {
    state.owed += demand;
    return { events: take(state), state };
  },
  handleInfo(message, state, ctx) {
    if (message !== 'sweep') return undefined;
    ctx.sendAfter(state.redeliverMs / 3, 'sweep');
    const done = new Set(records(state.handled).flatMap((r) => r.events ?? []));
    const late = [];
    for (const [id, at] of state.inflight) {
      if (done.has(id)) state.inflight.delete(id);
      else if (Date.now() - at > state.redeliverMs) {
        state.inflight.delete(id);
        late.push(id);
      }
    }
    state.todo.unshift(...late);
    return { events: take(state), state };
  },
});

/** What a resender sends now: ids waiting, as far as demand owed goes. */
function take(state) {
  const events = state.todo.splice(0, Math.min(state.owed, state.todo.length));
  state.owed -= events.length;
  const now = Date.now();
  for (const id of events) state.inflight.set(id, now);
  return events;
}

/** Hands events on as they are. */
export const relay = producerConsumer({
  init: () => ({ state: null }),
  handleEvents: (events) => ({ events }),
});

/**
 * Records every batch it handles to `file` and, of each, the ids it sees for
 * the first time (`fresh`): their effect. The ids it has seen survive a restart
 * (read back from the file), so an event delivered again takes no effect twice.
 */
export const onceSink = consumer({
  init: ({ file, delayMs = 0 }) => {
    const seen = new Set(records(file).flatMap((r) => r.events ?? []));
    record(file, { started: process.pid });
    return { state: { file, delayMs, seen } };
  },
  async handleEvents(events, _from, state) {
    if (state.delayMs > 0) await sleep(state.delayMs);
    const fresh = events.filter((e) => !state.seen.has(e));
    for (const e of fresh) state.seen.add(e);
    record(state.file, { pid: process.pid, events, fresh });
  },
});

/** Where the worker of this process records, from its args (a concurrentConsumer's tasks do not see them). */
const workerArgs = { file: '', taskMs: 200 };
const workerSpec = concurrentConsumer({
  subscribeTo: [],
  timeoutMs: 60_000,
  run: async (event) => {
    record(workerArgs.file, { pid: process.pid, start: event });
    await sleep(workerArgs.taskMs);
    record(workerArgs.file, { pid: process.pid, done: event });
  },
});

/** Runs each event as a task of `taskMs` (default 200), recording its start and its end to `file`. One per agent. */
export const worker = {
  ...workerSpec,
  init: ({ file, taskMs = 200 }, ctx) => {
    Object.assign(workerArgs, { file, taskMs });
    return workerSpec.init(undefined, ctx);
  },
};

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
