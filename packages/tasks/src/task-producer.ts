import { backoffMs, producer, type StageContext } from '@stagefabric/runtime';
import type { ClaimBatch, ClaimedTask, TaskStore } from './task-store.js';

export interface TaskProducerOptions {
  readonly store: TaskStore;
  /** Default 'default'. */
  readonly queue?: string;
  /** Names this agent as the owner of the leases it takes. */
  readonly owner: string;
  /** How long a claimed task is held before another node may run it. Default 30 000 ms. */
  readonly leaseMs?: number;
  /** Fallback when a notification is missed; also when expired leases are looked for. Default 1000 ms. */
  readonly pollIntervalMs?: number;
  /** Most tasks claimed in one round trip. Default 1000. */
  readonly claimMax?: number;
  /** Store failures (the database down): the producer backs off and tries again. */
  readonly onError?: (error: Error) => void;
  /** Tasks whose leases lapsed (their nodes died or stalled), put back to waiting or failed for good by this producer's poll. */
  readonly onRecovered?: (count: number) => void;
}

export const TASK_PRODUCER_DEFAULTS = { queue: 'default', leaseMs: 30_000, pollIntervalMs: 1000, claimMax: 1000 } as const;

interface State {
  /** Demand not yet met by claimed tasks. */
  pending: number;
  /** The claim in flight, if any; settles once it is answered. */
  claiming: Promise<void> | undefined;
  failures: number;
  unlisten: (() => Promise<void>) | undefined;
  /** When the earliest scheduled task falls due, if a wake-up is set for it. */
  dueAt: number | undefined;
  /** A wake-up came while a claim was in flight (which may have looked before the tasks it announced): claim again after it. */
  rewake: boolean;
}

type Info =
  | 'wake'
  | 'poll'
  | { readonly claimed: ClaimedTask[]; readonly asked: number; readonly lookedAhead: Date | null | undefined }
  | { readonly failed: Error }
  | { readonly nextRunAt: number | null };

/**
 * Answers demand by claiming waiting tasks (never more than asked), keeps
 * unmet demand pending, and claims again when tasks are enqueued
 * (LISTEN/NOTIFY), when scheduled ones come due, or on the poll. The poll
 * also returns tasks whose lease expired to the queue. Claims carry this
 * producer's owner; a runner on another node takes them over. Time is the
 * stage system's clock.
 */
export function taskProducer(options: TaskProducerOptions) {
  const queue = options.queue ?? TASK_PRODUCER_DEFAULTS.queue;
  const leaseMs = options.leaseMs ?? TASK_PRODUCER_DEFAULTS.leaseMs;
  const pollIntervalMs = options.pollIntervalMs ?? TASK_PRODUCER_DEFAULTS.pollIntervalMs;
  const claimMax = options.claimMax ?? TASK_PRODUCER_DEFAULTS.claimMax;
  const { store } = options;

  /** A store that looks ahead in its claim saves the producer asking nextRunAt after a short one. */
  const claimBatch = async (asked: number): Promise<ClaimBatch> =>
    store.claimLookingAhead === undefined
      ? { tasks: await store.claim(queue, asked, options.owner, leaseMs) }
      : store.claimLookingAhead(queue, asked, options.owner, leaseMs);

  const claim = (state: State, ctx: StageContext) => {
    if (state.claiming !== undefined || state.pending === 0) return;
    const asked = Math.min(state.pending, claimMax);
    state.claiming = claimBatch(asked).then(
      (batch) => ctx.send(ctx.self, { claimed: batch.tasks, asked, lookedAhead: batch.nextRunAt }),
      (error: Error) => ctx.send(ctx.self, { failed: error }),
    );
  };

  /** Sets a wake-up for the earliest scheduled task, if it falls due before the next poll. */
  const watchSchedule = (ctx: StageContext) => {
    store.nextRunAt(queue).then(
      (at) => ctx.send(ctx.self, { nextRunAt: at === null ? null : at.getTime() }),
      () => {},
    );
  };

  /** A wake-up at `at` (ms), if it falls before the next poll and before (or instead of a past) one already set. */
  const wakeAt = (at: number, state: State, ctx: StageContext) => {
    const now = ctx.clock.now();
    const delay = at - now;
    if (delay < pollIntervalMs && (state.dueAt === undefined || at < state.dueAt || state.dueAt < now)) {
      state.dueAt = at;
      ctx.sendAfter(Math.max(0, delay), 'wake');
    }
  };

  return producer<State, ClaimedTask, unknown>({
    async init(_args, ctx) {
      const unlisten = await store.onEnqueued(queue, () => ctx.send(ctx.self, 'wake'));
      ctx.sendAfter(pollIntervalMs, 'poll');
      return { state: { pending: 0, claiming: undefined, failures: 0, unlisten, dueAt: undefined, rewake: false } };
    },
    handleDemand(demand, state, ctx) {
      state.pending += demand;
      claim(state, ctx);
      return { state };
    },
    async handleInfo(message, state, ctx) {
      const info = message as Info;
      if (info === 'wake') {
        if (state.claiming !== undefined) state.rewake = true;
        claim(state, ctx);
      } else if (info === 'poll') {
        ctx.sendAfter(pollIntervalMs, 'poll');
        // Tasks of a node that died come back when their lease runs out.
        const recovered = await store.recoverExpired().catch((error: Error) => {
          options.onError?.(error);
          return 0;
        });
        if (recovered > 0) options.onRecovered?.(recovered);
        claim(state, ctx);
        if (state.pending > 0) watchSchedule(ctx);
      } else if ('claimed' in info) {
        state.claiming = undefined;
        state.failures = 0;
        state.pending -= info.claimed.length;
        const rewake = state.rewake;
        state.rewake = false;
        // A full claim means more may be waiting; a short one means the queue is empty for now, unless a wake-up came meanwhile.
        if (info.claimed.length === info.asked || rewake) claim(state, ctx);
        else if (state.pending > 0) {
          const at = info.lookedAhead;
          if (at === undefined) watchSchedule(ctx);
          else if (at !== null) wakeAt(at.getTime(), state, ctx);
        }
        return { events: info.claimed, state };
      } else if ('failed' in info) {
        state.claiming = undefined;
        state.failures++;
        options.onError?.(info.failed);
        ctx.sendAfter(backoffMs(state.failures, { baseMs: 100, maxMs: 5000 }), 'wake');
      } else if ('nextRunAt' in info && info.nextRunAt !== null) {
        wakeAt(info.nextRunAt, state, ctx);
      }
      return { state };
    },
    async terminate(_reason, state) {
      // A claim answered after the stage exited holds its tasks for this owner: the node hands them back after its stages stop.
      await state.claiming;
      await state.unlisten?.();
    },
  });
}
