import { randomUUID } from 'node:crypto';
import { describeValue, FabricError } from '@stagefabric/runtime';
import {
  type BackoffOptions,
  type ClaimedTask,
  type LeaseLossPhase,
  openTaskStore,
  type PruneCount,
  type QueueLimits,
  type RefusalReason,
  type RetentionPolicy,
  type ScheduleRecord,
  startTaskRetention,
  startTaskScheduler,
  type TaskOutcomeRecord,
  TaskRegistry,
  type TaskRetention,
  type TaskScheduler,
  type TaskStore,
  taskProducer,
  taskRunner,
} from '@stagefabric/tasks';
import type { Logger } from './logger.js';
import { type BuiltinStage, importModule, StageLoadError } from './stage-loader.js';
import { scheduleDefinition, type Topology } from './topology.js';

export interface TaskHostOptions {
  readonly topology: Topology;
  readonly node: string;
  readonly logger: Logger;
  /** PostgreSQL; the embedded PGlite store when absent. */
  readonly databaseUrl?: string | undefined;
  /** For `store: bullmq`. */
  readonly redisUrl?: string | undefined;
  /** A store of the caller's (tests, embedding); closed by its owner, not here. */
  readonly store?: TaskStore;
  readonly onStarted?: (task: ClaimedTask) => void;
  readonly onRecorded?: (task: ClaimedTask, outcome: TaskOutcomeRecord, durationMs: number) => void;
  /** For metrics; each is logged here too. */
  readonly onOutcomeRefused?: (task: ClaimedTask, reason: RefusalReason) => void;
  readonly onLeaseLost?: (task: ClaimedTask, phase: LeaseLossPhase) => void;
  readonly onDropped?: () => void;
  readonly onRecovered?: (count: number) => void;
  /** A schedule's fire this node's scheduler enqueued (`duplicate`: the task's uniqueKey was still held). */
  readonly onScheduleFired?: (schedule: ScheduleRecord, duplicate: boolean) => void;
  /** Finished tasks this node's retention deleted, one batch. */
  readonly onPruned?: (pruned: PruneCount) => void;
  /** Missed fires beyond a schedule's backfill that this node's scheduler skipped. */
  readonly onScheduleSkipped?: (schedule: ScheduleRecord, count: number) => void;
  /** A task store call that failed (logged here too), by who made it: producer, runner, store (its own connection), retention, schedules. */
  readonly onStoreError?: (source: TaskStoreErrorSource) => void;
}

export type TaskStoreErrorSource = 'producer' | 'runner' | 'store' | 'retention' | 'schedules';

/** Logs a failed task store call with `message` and reports it (for its metric), by who made it. */
function storeErrors(options: TaskHostOptions, source: TaskStoreErrorSource, message: string): (error: Error) => void {
  return (error) => {
    options.logger.warn({ err: error, source }, message);
    options.onStoreError?.(source);
  };
}

/** How long an agent's boot waits for a PostgreSQL task store it cannot reach before it gives up. */
export const TASK_STORE_CONNECT_TIMEOUT_MS = 60_000;

/** What a handlers module may export besides handlers: called once the agent runs. */
export type OnStart = (context: {
  readonly store: TaskStore;
  readonly stop: () => Promise<void>;
  /** This agent's node name. */
  readonly node: string;
  /** The stage instances this agent runs (on a fabric, those placed on this node). */
  readonly stages: readonly string[];
}) => unknown;

interface ProducerArgs {
  readonly queue?: string;
  readonly leaseMs?: number;
  readonly pollIntervalMs?: number;
  readonly claimMax?: number;
}

interface RunnerArgs {
  readonly concurrency?: number;
  readonly leaseMs?: number;
  readonly backoff?: BackoffOptions;
}

/**
 * The task runner on a node: its store (migrated on start), the handlers
 * of the topology's handlers module, and the built-in stages
 * `stagefabric:task-producer` and `stagefabric:task-runner` bound to both.
 */
export class TaskHost {
  /**
   * Lease owner for this agent run: node name plus a nonce, so a restarted
   * node never mistakes old leases for its own. Its producers claim under
   * it, its runners take over tasks claimed on other nodes under it, and at
   * a graceful stop it hands back what it still holds.
   */
  readonly owner: string;
  readonly builtins: ReadonlyMap<string, BuiltinStage>;
  /** Fires the store's schedules (the topology's and the API's); one per agent, each fire enqueued once among them. */
  private scheduler: TaskScheduler | undefined;
  /** Deletes finished tasks by the topology's retention (on by default). */
  private retention: TaskRetention | undefined;

  private constructor(
    readonly store: TaskStore,
    readonly registry: TaskRegistry,
    readonly onStart: OnStart | undefined,
    private readonly ownsStore: boolean,
    private readonly options: TaskHostOptions,
  ) {
    this.owner = `${options.node}/${randomUUID().slice(0, 8)}`;
    const { logger } = options;
    const asObject = (args: unknown, stage: string) => {
      if (args !== undefined && (typeof args !== 'object' || args === null)) throw new StageLoadError(`${stage}: args must be a map`);
      return (args ?? {}) as Record<string, unknown>;
    };
    // Nothing about a lease or an outcome fails silently: each is a log line here and a metric through the agent.
    const onRecovered = (count: number) => {
      logger.warn({ tasks: count }, 'tasks whose leases lapsed went back to waiting, or failed on their last attempt');
      options.onRecovered?.(count);
    };
    const onOutcomeRefused = (task: ClaimedTask, outcome: TaskOutcomeRecord, reason: RefusalReason) => {
      logger.warn(
        { task: task.id, queue: task.queue, name: task.name, attempt: task.attempt, outcome: outcome.status, reason },
        'task outcome refused: this run no longer holds the task',
      );
      options.onOutcomeRefused?.(task, reason);
    };
    const onLeaseLost = (task: ClaimedTask, phase: LeaseLossPhase) => {
      logger.warn(
        {
          task: task.id,
          queue: task.queue,
          name: task.name,
          attempt: task.attempt,
          phase,
          result: phase === 'running' ? 'run aborted' : 'not run',
        },
        'task lease lost',
      );
      options.onLeaseLost?.(task, phase);
    };
    const onDropped = (event: unknown, problem: string) => {
      logger.error({ event: describeValue(event), problem }, 'task event dropped: not a task this runner can run');
      options.onDropped?.();
    };
    this.builtins = new Map<string, BuiltinStage>([
      [
        'stagefabric:task-producer',
        (args) => {
          const a = asObject(args, 'stagefabric:task-producer') as ProducerArgs;
          return taskProducer({
            store,
            owner: this.owner,
            onError: storeErrors(options, 'producer', 'task store error; retrying'),
            onRecovered,
            ...a,
          });
        },
      ],
      [
        'stagefabric:task-runner',
        (args) => {
          const a = asObject(args, 'stagefabric:task-runner') as RunnerArgs;
          return taskRunner({
            store,
            registry,
            owner: this.owner,
            subscribeTo: [],
            onError: storeErrors(options, 'runner', 'task store error; retrying'),
            onOutcomeRefused,
            onLeaseLost,
            onDropped,
            ...(a.leaseMs === undefined ? {} : { leaseMs: a.leaseMs }),
            ...(a.concurrency === undefined ? {} : { concurrency: a.concurrency }),
            ...(a.backoff === undefined ? {} : { backoff: a.backoff }),
            ...(options.onRecorded === undefined ? {} : { onRecorded: options.onRecorded }),
            ...(options.onStarted === undefined ? {} : { onStarted: options.onStarted }),
          });
        },
      ],
    ]);
  }

  static async open(options: TaskHostOptions): Promise<TaskHost | undefined> {
    const config = options.topology.tasks;
    if (config === undefined) return undefined;
    const module = await importModule(options.topology, 'tasks.handlers', config.handlers);
    const exported = (typeof module.default === 'object' && module.default !== null ? module.default : module) as Record<string, unknown>;
    const { onStart, ...handlers } = exported;
    if (onStart !== undefined && typeof onStart !== 'function') throw new StageLoadError('tasks.handlers: onStart must be a function');
    let registry: TaskRegistry;
    try {
      registry = TaskRegistry.from(handlers);
    } catch (error) {
      throw new StageLoadError(`tasks.handlers (${config.handlers}): ${(error as Error).message}`);
    }
    const store =
      options.store ??
      (await openTaskStore({
        kind: config.store,
        redisUrl: options.redisUrl,
        databaseUrl: options.databaseUrl,
        schema: config.schema,
        prefix: config.prefix,
        onError: storeErrors(options, 'store', 'task store error'),
        // An agent outlives a database restart; so does its boot, as its Redis clients wait for Redis.
        connectTimeoutMs: TASK_STORE_CONNECT_TIMEOUT_MS,
        onUnreachable: (e, retryInMs) => options.logger.warn({ err: e.message, retryInMs }, 'task store unreachable; trying again'),
      }));
    try {
      for (const [queue, limits] of Object.entries(config.limits ?? {})) await store.setLimits(queue, limits as QueueLimits);
    } catch (error) {
      if (options.store === undefined) await store.close();
      // The store's own code stays (SF_BAD_OPTION, or SF_UNSUPPORTED for what it cannot limit), the topology's key named.
      throw new FabricError(error instanceof FabricError ? error.code : 'SF_BAD_OPTION', `tasks.limits: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (config.limits !== undefined) options.logger.info({ limits: config.limits }, 'task queue limits set');
    const host = new TaskHost(store, registry, onStart as OnStart | undefined, options.store === undefined, options);
    try {
      await host.startSchedules();
      host.startRetention();
    } catch (error) {
      await host.close();
      throw error;
    }
    return host;
  }

  private startRetention(): void {
    const { logger, topology } = this.options;
    const config = topology.tasks?.retention;
    if (config === false) return;
    const { intervalMs, batchSize, ...rules } = config ?? {};
    this.retention = startTaskRetention({
      store: this.store,
      policy: Object.fromEntries(Object.entries(rules).filter(([, r]) => r !== undefined)) as RetentionPolicy,
      ...(intervalMs === undefined ? {} : { intervalMs }),
      ...(batchSize === undefined ? {} : { batchSize }),
      onPruned: (pruned) => {
        logger.info({ states: pruned.states, pruned: pruned.count }, 'finished tasks pruned by retention');
        this.options.onPruned?.(pruned);
      },
      onError: storeErrors(this.options, 'retention', 'retention pass failed; trying again next pass'),
    });
  }

  /** Declares the topology's schedules (replacing those of the same name) and starts this node's scheduler. */
  private async startSchedules(): Promise<void> {
    const { logger, topology } = this.options;
    const declared = Object.entries(topology.tasks?.schedules ?? {});
    for (const [name, schedule] of declared) {
      if (this.registry.get(schedule.task) === undefined)
        throw new StageLoadError(`tasks.schedules.${name}.task: no handler "${schedule.task}" in ${topology.tasks?.handlers}`);
    }
    await this.store.defineSchedules(declared.map(([name, schedule]) => scheduleDefinition(name, schedule)));
    this.scheduler = startTaskScheduler({
      store: this.store,
      onFired: (schedule, fireAt, result) => {
        logger.info(
          { schedule: schedule.name, fireAt: fireAt.toISOString(), task: result.id, duplicate: result.duplicate },
          result.duplicate ? 'schedule fired: its task is still pending, nothing added' : 'schedule fired: task enqueued',
        );
        this.options.onScheduleFired?.(schedule, result.duplicate);
      },
      onSkipped: (schedule, count, upTo) => {
        logger.warn(
          { schedule: schedule.name, skipped: count, upTo: upTo.toISOString(), backfill: schedule.backfill },
          'schedule fires missed while no agent ran, beyond its backfill: skipped',
        );
        this.options.onScheduleSkipped?.(schedule, count);
      },
      onError: storeErrors(this.options, 'schedules', 'schedule pass failed; trying again next pass'),
    });
  }

  /**
   * Once the node's stages have exited: every task it still holds goes back
   * to waiting, for other nodes at once rather than when its lease lapses
   * (claimed by its producer and not taken over by a runner, prefetched,
   * aborted at the end of the drain); tasks runners on other nodes took over
   * stay theirs. Then the store it opened closes.
   */
  async close(): Promise<void> {
    const { logger } = this.options;
    await this.scheduler?.stop();
    await this.retention?.stop();
    try {
      const released = await this.store.releaseHeld(this.owner);
      if (released.length > 0) logger.info({ released: released.length }, 'held tasks handed back to waiting');
    } catch (error) {
      logger.warn({ err: error }, 'could not hand back held tasks: they run again once their leases lapse');
    }
    if (this.ownsStore) await this.store.close();
  }
}
