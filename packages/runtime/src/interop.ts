import { FabricError } from './errors.js';
import { resolveSubscription } from './options.js';
import { type AnyStageSpec, consumer, type ProducerSpec, producer } from './spec.js';
import type { StageSystem } from './system.js';
import { type CancelInfo, isCleanExit, type StageAddress, type StageRef, type SubscribeOptions, type Subscription } from './types.js';

interface IterableState<T> {
  readonly iterator: Iterator<T> | AsyncIterator<T>;
  readonly async: boolean;
  /** Demand not yet met (async sources). */
  wanted: number;
  pulling: boolean;
}

/**
 * A producer over an iterable or async iterable (GenStage.from_enumerable):
 * it pulls only what consumers ask for, and stops with reason 'normal' when
 * the source is exhausted.
 */
export function fromIterable<T>(source: Iterable<T> | AsyncIterable<T>): ProducerSpec<IterableState<T>, T, void> {
  const pullAsync = (state: IterableState<T>, self: StageRef, send: (to: StageAddress, message: unknown) => void) => {
    if (state.pulling) return;
    state.pulling = true;
    const step = (): void => {
      if (state.wanted <= 0) {
        state.pulling = false;
        return;
      }
      state.wanted--;
      Promise.resolve((state.iterator as AsyncIterator<T>).next()).then(
        (r) => {
          send(self, r.done ? { kind: '$iterable-done' } : { kind: '$iterable-item', value: r.value });
          if (!r.done) step();
        },
        (error: unknown) => send(self, { kind: '$iterable-failed', error }),
      );
    };
    step();
  };

  return producer<IterableState<T>, T>({
    init: () => {
      const isAsync = typeof (source as AsyncIterable<T>)[Symbol.asyncIterator] === 'function';
      const iterator = isAsync ? (source as AsyncIterable<T>)[Symbol.asyncIterator]() : (source as Iterable<T>)[Symbol.iterator]();
      return { state: { iterator, async: isAsync, wanted: 0, pulling: false } };
    },
    handleDemand(demand, state, ctx) {
      if (state.async) {
        state.wanted += demand;
        pullAsync(state, ctx.self, ctx.send);
        return;
      }
      const events: T[] = [];
      const iterator = state.iterator as Iterator<T>;
      for (let i = 0; i < demand; i++) {
        const r = iterator.next();
        if (r.done) return { events, stop: 'normal' };
        events.push(r.value);
      }
      return { events };
    },
    handleInfo(message) {
      const m = message as { kind?: string; value?: T; error?: unknown };
      if (m.kind === '$iterable-item') return { events: [m.value as T] };
      if (m.kind === '$iterable-done') return { stop: 'normal' };
      if (m.kind === '$iterable-failed') return { stop: m.error instanceof Error ? m.error : new Error(String(m.error)) };
      return undefined;
    },
    terminate(_reason, state) {
      void state.iterator.return?.();
    },
  });
}

export interface ToAsyncIterableOptions {
  readonly maxDemand?: number;
  readonly minDemand?: number;
}

/**
 * Consumes producers as an async iterable (GenStage.stream): events arrive
 * under demand, at most maxDemand held or in flight. Iteration ends when
 * every producer has exited cleanly or cancelled; it throws if one crashed.
 * Breaking out of the loop cancels the subscriptions.
 */
export function toAsyncIterable<T>(
  system: StageSystem,
  producers: readonly StageAddress[],
  options: ToAsyncIterableOptions = {},
): AsyncIterableIterator<T> {
  const resolved = resolveSubscription('toAsyncIterable', options as SubscribeOptions);
  const queue: T[] = [];
  let consumed = 0; // events taken since the last ask, per the whole stream
  let open = producers.length;
  let failure: unknown;
  let wake: (() => void) | undefined;
  let stage: StageRef | undefined;
  const subscriptions: Subscription[] = [];
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const spec = consumer<null, T>({
    init: () => ({ state: null, subscribeTo: producers.map((to) => ({ to, ...options, cancel: 'temporary' as const })) }),
    handleSubscribe(side, _opts, subscription, _state, ctx) {
      if (side !== 'producer') return;
      subscriptions.push(subscription);
      ctx.ask(subscription, resolved.maxDemand);
      return { demand: 'manual' };
    },
    handleEvents(events) {
      for (const e of events) queue.push(e);
      notify();
    },
    handleInfo(message, _state, ctx) {
      // The reader took (maxDemand - minDemand) events: ask each producer for that many again.
      if (message === '$ask') for (const s of subscriptions) ctx.ask(s, resolved.maxDemand - resolved.minDemand);
    },
    handleCancel(info: CancelInfo, subscription) {
      subscriptions.splice(subscriptions.indexOf(subscription), 1);
      if (!isCleanExit(info.reason) && info.reason !== 'noproc') failure ??= info.reason;
      open--;
      notify();
      return open === 0 ? { stop: 'normal' } : undefined;
    },
  });
  const started = system.start(spec, undefined).then((ref) => {
    stage = ref;
  });
  const close = async () => {
    await started;
    if (stage !== undefined) await system.stop(stage, 'normal');
  };
  const iterator: AsyncIterableIterator<T> = {
    async next(): Promise<IteratorResult<T>> {
      await started;
      for (;;) {
        if (queue.length > 0) {
          const value = queue.shift() as T;
          if (++consumed >= resolved.maxDemand - resolved.minDemand && stage !== undefined) {
            consumed = 0;
            system.send(stage, '$ask');
          }
          return { value, done: false };
        }
        if (failure !== undefined) {
          const error = failure;
          failure = undefined;
          open = 0;
          await close();
          throw error instanceof Error ? error : new FabricError('SF_STAGE_EXITED', `producer exited: ${String(error)}`, { cause: error });
        }
        if (open === 0) return { value: undefined, done: true };
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    },
    async return(): Promise<IteratorResult<T>> {
      open = 0;
      await close();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
  return iterator;
}

export interface PipelineStep {
  readonly spec: AnyStageSpec;
  readonly args?: unknown;
  readonly name?: string;
  /** How this stage subscribes to the one before it. */
  readonly subscribe?: Omit<SubscribeOptions, 'to'>;
}

/**
 * Starts a linear pipeline in one call: the first step is the producer, each
 * next step subscribes to the one before. Subscriptions are made from the
 * last step back, so each stage has its consumer's demand before its own
 * producer starts sending. Returns the refs in step order.
 */
export async function pipeline(system: StageSystem, steps: readonly PipelineStep[]): Promise<StageRef[]> {
  if (steps.length < 2) throw new FabricError('SF_BAD_OPTION', `pipeline needs at least two steps, got ${steps.length}`);
  const refs: StageRef[] = [];
  for (const step of steps) refs.push(await system.start(step.spec, step.args, step.name === undefined ? {} : { name: step.name }));
  for (let i = steps.length - 1; i > 0; i--) {
    await system.subscribe(refs[i] as StageRef, { ...(steps[i]?.subscribe ?? {}), to: refs[i - 1] as StageRef });
  }
  return refs;
}
