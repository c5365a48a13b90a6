import {
  backoffMs,
  type Clock,
  type ConcurrentConsumerState,
  type ConsumerSpec,
  concurrentConsumer,
  FabricError,
  isFabricError,
  isTraceparent,
  type StageAddress,
  type SubscribeOptions,
  systemClock,
  type TaskOutcome,
  type TimerHandle,
  type TraceSpan,
} from '@stagefabric/runtime';
import { type Query, SqlTaskStore } from './sql-task-store.js';
import { validateTaskArgs } from './task-args.js';
import { BACKOFF_DEFAULTS, type BackoffOptions, retryDelayMs, storedBackoffProblem } from './task-backoff.js';
import type { TaskContext, TaskRegistry } from './task-registry.js';
import { type ClaimedTask, FINAL_STATES, type TaskClaim, type TaskOutcomeRecord, type TaskProgress, type TaskStore } from './task-store.js';
import { startRunSpan } from './task-tracing.js';

/** Why the store refused an outcome: `lease-lost` (its lease lapsed and the task went back or to another run), `finished` (it is final already), `not-found`. */
export type RefusalReason = 'lease-lost' | 'finished' | 'not-found';

/** Where a task was when its lease was found lost: taken over from another node, waiting for a slot, or running (its run is then aborted). */
export type LeaseLossPhase = 'handover' | 'prefetched' | 'running';

export interface TaskRunnerOptions {
  readonly store: TaskStore;
  readonly registry: TaskRegistry;
  /**
   * This node's lease owner. A task claimed under another owner (a producer
   * on another node) is taken over under this one before it runs, so this
   * node extends its lease, records its outcome and hands it back.
   */
  readonly owner: string;
  /** Lease length; leases of tasks in hand are extended every third of it. Default 30 000 ms. */
  readonly leaseMs?: number;
  readonly subscribeTo: readonly (StageAddress | SubscribeOptions)[];
  /** Most tasks running at once; the subscription's maxDemand beyond it is prefetch. Default: maxDemand. */
  readonly concurrency?: number;
  /** On a graceful stop, how long running tasks may finish before they are aborted (their leases then lapse). Default 30 000 ms. */
  readonly drainMs?: number;
  /** The default backoff of failed attempts: exponential within these bounds. A handler's backoff wins over it, a task's own over both. */
  readonly backoff?: BackoffOptions;
  /** Outcomes are written together once this many are ready... Default 250. */
  readonly flushSize?: number;
  /** ...or once the oldest has waited this long. Default 1 ms. */
  readonly flushMs?: number;
  /** Every task as it starts, for metrics. */
  readonly onStarted?: (task: ClaimedTask) => void;
  /** Every recorded outcome, for metrics and logs. */
  readonly onRecorded?: (task: ClaimedTask, outcome: TaskOutcomeRecord, durationMs: number) => void;
  /** An outcome the store refused, because this run's claim was no longer current. */
  readonly onOutcomeRefused?: (task: ClaimedTask, outcome: TaskOutcomeRecord, reason: RefusalReason) => void;
  /** A task in hand whose claim the store no longer honoured (taking it over or extending its lease): it does not run, or its run is aborted. */
  readonly onLeaseLost?: (task: ClaimedTask, phase: LeaseLossPhase) => void;
  /** An event that is not a task to run (malformed, or a claim this runner already holds): dropped, its demand asked for again. */
  readonly onDropped?: (event: unknown, problem: string) => void;
  readonly onError?: (error: Error) => void;
}

export const TASK_RUNNER_DEFAULTS = {
  drainMs: 30_000,
  leaseMs: 30_000,
  backoffBaseMs: BACKOFF_DEFAULTS.baseMs,
  backoffMaxMs: BACKOFF_DEFAULTS.maxMs,
  flushSize: 250,
  flushMs: 1,
} as const;

function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return typeof error === 'string' ? error : (JSON.stringify(error) ?? String(error));
}

const isCount = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= 2 ** 31 - 1;

/** What is wrong with an event that should be a claimed task (it may come from the wire), or undefined. */
export function claimedTaskProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return 'not an object';
  const t = value as Record<string, unknown>;
  for (const field of ['id', 'queue', 'name', 'claimant'] as const)
    if (typeof t[field] !== 'string' || t[field] === '') return `${field} must be a non-empty string`;
  if (!isCount(t.attempt, 1)) return 'attempt must be a positive integer';
  if (!isCount(t.maxAttempts, 1)) return 'maxAttempts must be a positive integer';
  if (!isCount(t.timeoutMs, 1)) return 'timeoutMs must be a positive integer';
  if (!(t.enqueuedAt instanceof Date) || !(t.leaseExpiresAt instanceof Date)) return 'enqueuedAt and leaseExpiresAt must be dates';
  for (const field of ['traceparent', 'firstRunTraceparent'] as const)
    if (t[field] !== undefined && !isTraceparent(t[field])) return `${field} must be a W3C traceparent when present`;
  if (t.backoff !== undefined) return storedBackoffProblem(t.backoff);
  return undefined;
}

/** A task in a runner's hands, with the claim it holds it by: the events its concurrent consumer runs. */
export interface TaskInHand {
  readonly task: ClaimedTask;
  /** The task's own claim, or the one this node took it over as. */
  claim: TaskClaim;
  /** Aborts the run when the lease is lost; the handler sees it through its signal. Made only when the handler reads its signal. */
  controller: AbortController | undefined;
  /** Why its run lost its lease: kept for a signal asked for afterwards. */
  lostReason: Error | undefined;
  /** Its claim is not current (lost, or never a task): it does not run, and no outcome is written for it. */
  lost: boolean;
  started: boolean;
  /** Its handler recorded its success inside its own transaction (succeedWith). */
  succeededWithin: boolean;
  /** Its outcome is being written: a lease extension refused now means it finished, not that it was lost. */
  finishing: boolean;
  /** Its run's span, once it started. */
  span?: TraceSpan;
}

const sleep = (clock: Clock, ms: number) => new Promise<void>((resolve) => clock.setTimeout(resolve, ms));

/**
 * Runs claimed tasks by name, each with its own timeout and AbortSignal, at
 * most `concurrency` at once (the runtime's concurrent consumer), and records
 * outcomes in batches. A slot is asked for again only once its outcome is
 * stored. Failures retry with backoff until their attempts run out. Tasks a
 * producer on another node claimed are taken over first; every task in hand
 * keeps its lease while it waits and runs, and a run whose lease is lost is
 * aborted. Time is the stage system's clock.
 */
export function taskRunner(options: TaskRunnerOptions): ConsumerSpec<ConcurrentConsumerState<TaskInHand>, ClaimedTask, void> {
  const leaseMs = options.leaseMs ?? TASK_RUNNER_DEFAULTS.leaseMs;
  const flushSize = options.flushSize ?? TASK_RUNNER_DEFAULTS.flushSize;
  const flushMs = options.flushMs ?? TASK_RUNNER_DEFAULTS.flushMs;
  const drainMs = options.drainMs ?? TASK_RUNNER_DEFAULTS.drainMs;
  const { store, registry, owner } = options;
  const within = store instanceof SqlTaskStore ? store : undefined;
  let clock: Clock = systemClock;
  /** Tasks in hand by id: prefetched or running, their leases extended. */
  const inHand = new Map<string, TaskInHand>();
  /** Outcome writes not yet answered, awaited on stop. */
  let unwritten = 0;
  /** A stop waiting for every outcome write to be answered. */
  let allWritten: (() => void) | undefined;
  /**
   * Outcomes waiting to be written, in batches of one outcome per task (so
   * the ids the store returns say which claim each answer is for); the last
   * batch takes new outcomes. Bounded by the tasks in hand.
   */
  const batches: Batch[] = [];
  /** Complete statements not yet answered: at most WRITES_IN_FLIGHT; outcomes meanwhile gather into the next batch. */
  let inFlight = 0;
  let flushTimer: TimerHandle | undefined;
  let leaseTimer: TimerHandle | undefined;
  let stopped = false;

  const forget = (held: TaskInHand) => {
    if (inHand.get(held.task.id) === held) inHand.delete(held.task.id);
  };

  const lose = (held: TaskInHand, phase: LeaseLossPhase) => {
    if (held.lost || held.finishing || held.succeededWithin) return;
    held.lost = true;
    forget(held);
    if (held.started) {
      held.lostReason = new FabricError(
        'SF_LEASE_LOST',
        `task ${held.task.id} (attempt ${held.task.attempt}) lost its lease: another run may hold it now`,
      );
      held.controller?.abort(held.lostReason);
    }
    options.onLeaseLost?.(held.task, phase);
  };

  const flush = () => {
    if (flushTimer !== undefined) clock.clearTimeout(flushTimer);
    flushTimer = undefined;
    while (inFlight < WRITES_IN_FLIGHT) {
      const taken = batches.shift();
      if (taken === undefined) return;
      inFlight++;
      store
        .complete(taken.entries.map((t) => t.outcome))
        .then(
          (ids) => {
            const recorded = new Set(ids);
            for (const t of taken.entries) written(t, recorded.has(t.outcome.id));
          },
          (error: Error) => {
            // Written again after a pause while the store is down; each waits on its own backoff.
            for (const t of taken.entries) {
              options.onError?.(error);
              clock.setTimeout(() => enqueue(t), backoffMs(t.attempt++, { baseMs: 100, maxMs: 5000 }));
            }
          },
        )
        .finally(() => {
          inFlight--;
          // What gathered while this write was out has waited a round trip already: it goes now.
          if (batches.length > 0) flush();
        });
    }
  };

  /** Puts an outcome in the open batch (one outcome per task in a batch), and writes it once full or after flushMs. */
  const enqueue = (entry: Unwritten) => {
    let open = batches.at(-1);
    if (open === undefined || open.ids.has(entry.outcome.id)) {
      open = { entries: [], ids: new Set() };
      batches.push(open);
    }
    open.entries.push(entry);
    open.ids.add(entry.outcome.id);
    if (open.entries.length >= flushSize || batches.length > 1) flush();
    else flushTimer ??= clock.setTimeout(flush, flushMs);
  };

  /** Writes one outcome; settles once the store answered it (written again while the store is down) and its callbacks ran. */
  const record = (outcome: TaskOutcomeRecord, held: TaskInHand, durationMs: number) =>
    new Promise<void>((resolve, reject) => {
      unwritten++;
      enqueue({ outcome, held, durationMs, attempt: 0, resolve, reject });
    });

  /** The store answered an outcome: taken, or refused (and why, from the task's row). */
  const written = (entry: Unwritten, recorded: boolean) => {
    unwritten--;
    if (unwritten === 0 && allWritten !== undefined) {
      allWritten();
      allWritten = undefined;
    }
    const { held, outcome } = entry;
    forget(held);
    if (recorded) {
      try {
        options.onRecorded?.(held.task, outcome, entry.durationMs);
        entry.resolve();
      } catch (error) {
        entry.reject(error);
      }
      return;
    }
    refusal(held)
      .then((reason) => {
        if (reason !== undefined) options.onOutcomeRefused?.(held.task, outcome, reason);
      })
      .then(entry.resolve, entry.reject);
  };

  /** Why the store refused a claim's outcome; undefined when it was this run's own success, recorded inside the handler's transaction. */
  const refusal = async (held: TaskInHand): Promise<RefusalReason | undefined> => {
    const now = await store.get(held.task.id).catch(() => undefined);
    if (now === null) return 'not-found';
    if (now === undefined || !FINAL_STATES.includes(now.state)) return 'lease-lost';
    return now.state === 'success' && held.succeededWithin ? undefined : 'finished';
  };

  /** Takes over the claims of tasks claimed under another owner; tasks whose claims are no longer current are lost. */
  const takeOver = async (helds: TaskInHand[]): Promise<void> => {
    const giveUpAt = clock.now() + leaseMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const adopted = await store.adopt(
          helds.map((h) => h.claim),
          owner,
          leaseMs,
        );
        // By id: a task is in a batch once (handleEvents drops a second), so its attempt is checked, not keyed.
        const taken = new Map<string, TaskClaim>();
        for (const c of adopted) taken.set(c.id, c);
        for (const h of helds) {
          const claim = taken.get(h.claim.id);
          if (claim === undefined || claim.attempt !== h.claim.attempt) lose(h, 'handover');
          else h.claim = claim;
        }
        return;
      } catch (error) {
        options.onError?.(error as Error);
        // The store has been away for a whole lease: these claims have lapsed and come back on their own.
        if (clock.now() >= giveUpAt) {
          for (const h of helds) lose(h, 'handover');
          return;
        }
        await sleep(clock, backoffMs(attempt, { baseMs: 100, maxMs: 5000 }));
      }
    }
  };

  /** Every task in hand keeps its lease, running or waiting for a slot; a lease the store no longer extends is lost. */
  const extendLeases = async () => {
    leaseTimer = undefined;
    const held = [...inHand.values()].filter((h) => !h.lost && !h.finishing && !h.succeededWithin);
    if (held.length > 0) {
      try {
        const kept = new Set(
          await store.extendLeases(
            held.map((h) => h.claim),
            leaseMs,
          ),
        );
        for (const h of held) if (!kept.has(h.claim.id) && inHand.get(h.task.id) === h) lose(h, h.started ? 'running' : 'prefetched');
      } catch (error) {
        options.onError?.(error as Error);
      }
    }
    if (!stopped) leaseTimer = clock.setTimeout(() => void extendLeases(), Math.max(10, Math.floor(leaseMs / 3)));
  };

  /** Wraps an event as a task in hand; an event that is not a task, or a claim already held, comes back lost. */
  const hold = (event: unknown): TaskInHand => {
    const problem = claimedTaskProblem(event);
    if (problem !== undefined) {
      options.onDropped?.(event, problem);
      return { task: standIn(event), claim: standIn(event), controller: undefined, lostReason: undefined, ...DROPPED };
    }
    const task = event as ClaimedTask;
    const held: TaskInHand = {
      task,
      claim: task,
      controller: undefined,
      lostReason: undefined,
      lost: false,
      started: false,
      succeededWithin: false,
      finishing: false,
    };
    const before = inHand.get(task.id);
    if (before !== undefined && before.task.attempt >= task.attempt) {
      options.onDropped?.(event, `task ${task.id} attempt ${task.attempt} arrived while this runner holds attempt ${before.task.attempt}`);
      return { ...held, ...DROPPED };
    }
    // A later attempt of a task in hand: the earlier claim lapsed and was claimed again.
    if (before !== undefined) lose(before, before.started ? 'running' : 'prefetched');
    return held;
  };

  const spec = concurrentConsumer<TaskInHand, unknown>({
    subscribeTo: options.subscribeTo,
    ...(options.concurrency === undefined ? {} : { concurrency: options.concurrency }),
    drainMs,
    // Prefetched tasks that never started go straight back to waiting, for another node.
    async onRelease(helds) {
      const live = helds.filter((h) => !h.lost);
      for (const h of helds) forget(h);
      await store.release(live.map((h) => h.claim));
    },
    timeoutMs: (held) => held.task.timeoutMs,
    run(held, run) {
      // Not this runner's to run: its slot comes straight back, with no outcome written.
      if (held.lost) return undefined;
      held.started = true;
      const { task } = held;
      options.onStarted?.(task);
      // Started first, so a run without a handler is a failed span too.
      const span = startRunSpan(task, owner);
      held.span = span;
      const registered = registry.lookup(task.name);
      if (registered === undefined) {
        throw new FabricError(
          'SF_NO_HANDLER',
          `no handler registered for task "${task.name}" (registered: ${registry.names().join(', ') || 'none'})`,
        );
      }
      const context = within === undefined ? new HandlerContext(held, run, store) : new SqlHandlerContext(held, run, store, within);
      const { handler, schema } = registered;
      return span.within(() => {
        if (schema === undefined) return handler(task.args, context);
        // Enqueued by a producer that did not check (another service, stagectl): checked again here, the handler gets the schema's output.
        return validateTaskArgs(task.name, schema, task.args, `task ${task.id} (${task.name}), attempt ${task.attempt}`).then((args) =>
          handler(args, context),
        );
      });
    },
    onOutcome(outcome: TaskOutcome<TaskInHand, unknown>): Promise<void> | undefined {
      const held = outcome.event;
      const { span } = held;
      if (span !== undefined) {
        span.setAttribute('stagefabric.task.outcome', held.lost ? 'lease-lost' : outcome.status);
        if (outcome.status !== 'success')
          span.fail(outcome.status === 'timeout' ? `timed out after ${held.task.timeoutMs} ms` : outcome.error);
        span.end();
      }
      // Dropped, or its lease was lost (reported then): whatever it did, the outcome is not this run's to write.
      if (held.lost) return undefined;
      held.finishing = true;
      const { task, claim } = held;
      const who = { id: claim.id, attempt: claim.attempt, claimant: claim.claimant };
      let result: TaskOutcomeRecord;
      const { durationMs } = outcome;
      // Written out, not spread from `who`: a spread into a literal with more fields takes V8's slow path, on every task.
      if (outcome.status === 'success')
        result = { id: claim.id, attempt: claim.attempt, claimant: claim.claimant, status: 'success', durationMs };
      else {
        const error = outcome.status === 'timeout' ? `timed out after ${task.timeoutMs} ms` : errorText(outcome.error);
        // Args that fail the handler's schema fail the same way on every attempt.
        const retry = task.attempt < task.maxAttempts && !isFabricError(outcome.error, 'SF_BAD_TASK_ARGS');
        // The first run that is retried is kept, for the links of the attempts after it.
        const firstRun = task.firstRunTraceparent === undefined ? span?.traceparent : undefined;
        result = retry
          ? {
              ...who,
              status: outcome.status,
              error,
              retryAt: new Date(
                clock.now() +
                  // The task's own backoff, else its handler's, else the runner's.
                  retryDelayMs(task.backoff ?? registry.backoffOf(task.name), task.attempt, error, options.backoff, (problem) =>
                    options.onError?.(
                      new FabricError('SF_BAD_RETURN', `task handler "${task.name}": its backoff ${problem}; the runner's backoff is used`),
                    ),
                  ),
              ),
              durationMs,
              ...(firstRun === undefined ? {} : { firstRunTraceparent: firstRun }),
            }
          : { ...who, status: outcome.status, error, durationMs };
      }
      // The handler's transaction recorded its success with its effects: nothing more to write.
      if (result.status === 'success' && held.succeededWithin) {
        forget(held);
        options.onRecorded?.(task, result, outcome.durationMs);
        return undefined;
      }
      return record(result, held, outcome.durationMs);
    },
  });

  return {
    ...spec,
    async handleEvents(events, from, state, ctx) {
      const seen = new Set<string>();
      const helds = events.map((event) => {
        const held = hold(event);
        if (held.lost) return held;
        if (!seen.has(held.task.id)) {
          seen.add(held.task.id);
          return held;
        }
        options.onDropped?.(event, `task ${held.task.id} arrived twice in one batch`);
        return { ...held, ...DROPPED };
      });
      const live = helds.filter((h) => !h.lost);
      // Claims this node made itself (a co-located producer) need no handover: only others' go to the store.
      const foreign = live.filter((h) => h.claim.claimant !== owner);
      if (foreign.length > 0) await takeOver(foreign);
      // In hand, its lease extended, only once taken over: an extension meanwhile would name the producer's claim.
      for (const h of live) if (!h.lost) inHand.set(h.task.id, h);
      return spec.handleEvents(helds, from, state, ctx);
    },
    async init(args, ctx) {
      clock = ctx.clock;
      stopped = false;
      inHand.clear();
      leaseTimer = clock.setTimeout(() => void extendLeases(), Math.max(10, Math.floor(leaseMs / 3)));
      return spec.init(args, ctx);
    },
    async terminate(reason, state) {
      // Leases stay extended while running tasks drain and their outcomes are written. A producer
      // whose node went away (noconnection) takes nothing from the tasks this runner took over:
      // they drain as on a graceful stop, and the restarted runner subscribes again.
      await spec.terminate?.(reason === 'noconnection' ? 'shutdown' : reason, state);
      flush();
      if (unwritten > 0)
        await Promise.race([
          new Promise<void>((resolve) => {
            allWritten = resolve;
          }),
          sleep(clock, drainMs),
        ]);
      stopped = true;
      if (leaseTimer !== undefined) clock.clearTimeout(leaseTimer);
      leaseTimer = undefined;
    },
  };
}

/** Outcome writes out at once: two, so one gathers the next batch while the other is answered. */
const WRITES_IN_FLIGHT = 2;

/** An outcome on its way to the store, with what its answer settles. */
interface Unwritten {
  readonly outcome: TaskOutcomeRecord;
  readonly held: TaskInHand;
  readonly durationMs: number;
  /** Writes that failed (the store down) so far. */
  attempt: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

interface Batch {
  readonly entries: Unwritten[];
  readonly ids: Set<string>;
}

const DROPPED = { lost: true, started: false, succeededWithin: false, finishing: false } as const;

/** What a dropped event stands in as: never run, never written, never extended. */
function standIn(event: unknown): ClaimedTask {
  const id =
    typeof event === 'object' && event !== null && typeof (event as { id?: unknown }).id === 'string' ? (event as { id: string }).id : '?';
  return {
    id,
    queue: '?',
    name: '?',
    args: null,
    attempt: 0,
    claimant: '',
    maxAttempts: 1,
    timeoutMs: 1,
    enqueuedAt: new Date(0),
    leaseExpiresAt: new Date(0),
  };
}

/** The lease's half of a run's signal: aborted when the lease is lost, made only when asked for. */
function leaseSignal(held: TaskInHand): AbortSignal {
  if (held.controller === undefined) {
    held.controller = new AbortController();
    if (held.lostReason !== undefined) held.controller.abort(held.lostReason);
  }
  return held.controller.signal;
}

/**
 * What a handler gets beside its args. Its signal, joining the run's
 * (timeout, stop) and the lease's, is made only when the handler reads it;
 * so are its functions: most handlers use none of them, and each costs an
 * allocation per task. Getters, so a handler may destructure them.
 */
class HandlerContext implements TaskContext {
  protected readonly held: TaskInHand;
  readonly #run: { readonly signal: AbortSignal };
  readonly #store: TaskStore;
  #signal: AbortSignal | undefined;
  #task: ClaimedTask | undefined;

  constructor(held: TaskInHand, run: { readonly signal: AbortSignal }, store: TaskStore) {
    this.held = held;
    this.#run = run;
    this.#store = store;
  }

  /** The task as this run holds it: under this node's claim when it was taken over. */
  get task(): ClaimedTask {
    const { task, claim } = this.held;
    if (claim === task || task.claimant === claim.claimant) return task;
    this.#task ??= { ...task, claimant: claim.claimant };
    return this.#task;
  }

  get signal(): AbortSignal {
    this.#signal ??= AbortSignal.any([this.#run.signal, leaseSignal(this.held)]);
    return this.#signal;
  }

  get progress(): (progress: TaskProgress) => Promise<boolean> {
    const { held } = this;
    const store = this.#store;
    return (progress) => store.progress(held.claim, progress);
  }
}

/** On a SQL store, the handler may record its success inside its own transaction. */
class SqlHandlerContext extends HandlerContext {
  readonly #within: SqlTaskStore;

  constructor(held: TaskInHand, run: { readonly signal: AbortSignal }, store: TaskStore, within: SqlTaskStore) {
    super(held, run, store);
    this.#within = within;
  }

  get succeedWith(): (query: Query) => Promise<boolean> {
    const { held } = this;
    const within = this.#within;
    return async (query) => {
      const ok = await within.succeedWith(query, held.claim);
      if (ok) held.succeededWithin = true;
      return ok;
    };
  }
}
