import type { Clock, TimerHandle } from '@stagefabric/runtime';

export interface PeriodicPasses<T> {
  /** One pass now, after the one running if any: passes never overlap. */
  run(): Promise<T>;
  /** No pass starts after this; waits for the one running. Idempotent. */
  stop(): Promise<void>;
  readonly stopped: boolean;
}

/**
 * Runs `pass` now and then `intervalMs` after each one ends, on `clock`
 * (a FakeClock in tests). The pass handles its own errors: a rejection
 * would stop the passes.
 */
export function startPeriodicPasses<T>(pass: () => Promise<T>, intervalMs: number, clock: Clock): PeriodicPasses<T> {
  let running: Promise<T> | undefined;
  let timer: TimerHandle | undefined;
  let stopped = false;
  const run = (): Promise<T> => {
    const next = (running ?? Promise.resolve()).then(pass);
    running = next;
    return next;
  };
  const loop = () => {
    if (stopped) return;
    timer = clock.setTimeout(() => {
      void run().then(loop);
    }, intervalMs);
  };
  void run().then(loop);
  return {
    run,
    get stopped() {
      return stopped;
    },
    async stop() {
      stopped = true;
      if (timer !== undefined) clock.clearTimeout(timer);
      await running;
    },
  };
}
