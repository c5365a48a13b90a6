import { createRequire } from 'node:module';
import { DEAD_LETTER_KINDS, type FabricNode } from '@stagefabric/fabric';
import type { StageObserver, StageSystem } from '@stagefabric/runtime';
import type { ClaimedTask, LeaseLossPhase, RefusalReason, TaskOutcomeRecord, TaskStore } from '@stagefabric/tasks';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Every metric an agent exports, named here and nowhere else. Base units
 * (seconds, bytes), `_total` on counters only, labels bounded by the
 * topology (stage, subscription) or by fixed sets (type, outcome).
 */
export const METRIC_NAMES = {
  stageEventsIn: 'stagefabric_stage_events_in_total',
  stageEventsOut: 'stagefabric_stage_events_out_total',
  stageBatches: 'stagefabric_stage_batches_total',
  stageHandleDuration: 'stagefabric_stage_handle_duration_seconds',
  stageBufferEvents: 'stagefabric_stage_buffer_events',
  stageBufferCapacity: 'stagefabric_stage_buffer_capacity_events',
  stageBufferDropped: 'stagefabric_stage_buffer_dropped_events_total',
  stageLastEvent: 'stagefabric_stage_last_event_timestamp_seconds',
  stageMailbox: 'stagefabric_stage_mailbox_messages',
  subscriptionDemand: 'stagefabric_subscription_outstanding_demand_events',
  transportMessages: 'stagefabric_transport_messages_total',
  transportBytes: 'stagefabric_transport_bytes_total',
  transportRedeliveries: 'stagefabric_transport_redeliveries_total',
  transportDeadLetters: 'stagefabric_transport_dead_letters_total',
  transportReconnects: 'stagefabric_transport_reconnects_total',
  transportSendRetries: 'stagefabric_transport_send_retries_total',
  transportSendFailures: 'stagefabric_transport_send_failures_total',
  fabricRefusedAsks: 'stagefabric_fabric_refused_asks_total',
  fabricAuthFailures: 'stagefabric_fabric_auth_failures_total',
  fabricHeartbeatsRefused: 'stagefabric_fabric_heartbeats_refused_total',
  fabricHeldEvents: 'stagefabric_fabric_held_events',
  fabricHeldBytes: 'stagefabric_fabric_held_bytes',
  fabricHeldDropped: 'stagefabric_fabric_held_events_dropped_total',
  metricsSourceUp: 'stagefabric_metrics_source_up',
  inboxEntries: 'stagefabric_inbox_entries',
  inboxPending: 'stagefabric_inbox_pending_entries',
  nodeUp: 'stagefabric_node_up',
  nodeHeartbeat: 'stagefabric_node_heartbeat_timestamp_seconds',
  buildInfo: 'stagefabric_build_info',
  tasks: 'stagefabric_tasks',
  tasksStarted: 'stagefabric_tasks_started_total',
  tasksFinished: 'stagefabric_tasks_finished_total',
  taskRunDuration: 'stagefabric_task_run_duration_seconds',
  taskQueueWait: 'stagefabric_task_queue_wait_seconds',
  taskOutcomesRefused: 'stagefabric_task_outcomes_refused_total',
  taskLeasesLost: 'stagefabric_task_leases_lost_total',
  taskLeasesRecovered: 'stagefabric_task_leases_recovered_total',
  taskStoreErrors: 'stagefabric_task_store_errors_total',
  taskEventsDropped: 'stagefabric_task_events_dropped_total',
  consoleActions: 'stagefabric_console_actions_total',
  scheduleFires: 'stagefabric_schedule_fires_total',
  tasksPruned: 'stagefabric_tasks_pruned_total',
  scheduleFiresSkipped: 'stagefabric_schedule_fires_skipped_total',
} as const;

/** This package's version, as its package.json says (dist/ and src/ both sit one level below it). */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** Longest a scrape waits for Redis (inbox lengths) or the task store (task counts): /metrics answers within a second in an outage. */
export const METRICS_SOURCE_TIMEOUT_MS = 400;

/** Resolves with `promise`'s value, or rejects once `ms` have passed. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** What a scrape read from Redis and the task store, each read bounded in time. */
interface Sources {
  readonly inboxEntries: [Record<string, string>, number][];
  readonly inboxPending: [Record<string, string>, number][];
  readonly tasks: [Record<string, string>, number][];
  /** Per source (redis, task_store): whether it answered in time. Absent sources are not used by this agent. */
  readonly up: [Record<string, string>, number][];
}

export interface AgentMetricsOptions {
  readonly node: string;
  readonly system: () => StageSystem | undefined;
  readonly fabric: () => FabricNode | undefined;
  /** Local inbox names (`stage@node`), for inbox length and pending. */
  readonly inboxes: () => readonly string[];
  readonly taskStore: () => TaskStore | undefined;
}

/**
 * The agent's Prometheus registry. Stage and transport counters are read from
 * the runtime's and transport's own counters at scrape time, so the hot path
 * pays only for the handle-duration histogram.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly observer: StageObserver;
  private readonly started: Counter;
  private readonly finished: Counter;
  private readonly runDuration: Histogram;
  private readonly queueWait: Histogram;
  private readonly refused: Counter;
  private readonly leasesLost: Counter;
  private readonly storeErrors: Counter;
  private readonly leasesRecovered: Counter;
  private readonly eventsDropped: Counter;
  private readonly consoleActions: Counter;
  private readonly scheduleFires: Counter;
  private readonly tasksPruned: Counter;
  private readonly scheduleFiresSkipped: Counter;
  private sources: Sources = { inboxEntries: [], inboxPending: [], tasks: [], up: [] };

  constructor(private readonly options: AgentMetricsOptions) {
    const r = this.registry;
    r.setDefaultLabels({ node: options.node });
    collectDefaultMetrics({ register: r, prefix: 'stagefabric_' });
    // prom-client names these gauges with `_total`, which Prometheus reserves for counters;
    // stagefabric_nodejs_active_resources{type} carries the same counts.
    for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total'])
      r.removeSingleMetric(`stagefabric_nodejs_${name}`);
    const stages = () => {
      const system = options.system();
      return system === undefined ? [] : system.list().map((ref) => system.stats(ref));
    };
    /** A counter mirrored from a monotonic source; a restarted stage starts from zero again. */
    const mirrored = (name: string, help: string, labelNames: string[], read: () => [Record<string, string>, number][]) => {
      const last = new Map<string, number>();
      return new Counter({
        name,
        help,
        labelNames,
        registers: [r],
        collect() {
          for (const [labels, value] of read()) {
            const key = JSON.stringify(labels);
            const before = last.get(key) ?? 0;
            const delta = value >= before ? value - before : value;
            // inc(0) too: a labelled series exists from the first scrape, so rate() over it is 0, not absent.
            this.inc(labels, delta);
            last.set(key, value);
          }
        },
      });
    };
    mirrored(METRIC_NAMES.stageEventsIn, 'Events received by a stage.', ['stage'], () =>
      stages().map((s) => [{ stage: s.ref.label }, s.eventsIn]),
    );
    mirrored(METRIC_NAMES.stageEventsOut, 'Events sent by a stage.', ['stage'], () =>
      stages().map((s) => [{ stage: s.ref.label }, s.eventsOut]),
    );
    mirrored(METRIC_NAMES.stageBatches, 'Batches handled by a stage.', ['stage'], () =>
      stages().map((s) => [{ stage: s.ref.label }, s.batchesIn]),
    );
    mirrored(METRIC_NAMES.stageBufferDropped, 'Events a producer dropped from its full buffer.', ['stage'], () =>
      stages().map((s) => [{ stage: s.ref.label }, s.bufferDropped]),
    );
    const handle = new Histogram({
      name: METRIC_NAMES.stageHandleDuration,
      help: 'Time a consumer spent in handleEvents per batch.',
      labelNames: ['stage'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [r],
    });
    this.observer = { batchHandled: (stage, _events, seconds) => handle.observe({ stage }, seconds) };
    const gauge = (
      name: string,
      help: string,
      labelNames: string[],
      read: () => [Record<string, string>, number][] | Promise<[Record<string, string>, number][]>,
    ) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers: [r],
        async collect() {
          this.reset();
          for (const [labels, value] of await read()) this.set(labels, value);
        },
      });
    gauge(METRIC_NAMES.stageBufferEvents, 'Events waiting in a producer buffer.', ['stage'], () =>
      stages().map((s) => [{ stage: s.ref.label }, s.bufferLength]),
    );
    gauge(METRIC_NAMES.stageBufferCapacity, 'Capacity of a producer buffer.', ['stage'], () =>
      stages()
        .filter((s) => s.kind !== 'consumer')
        .map((s) => [{ stage: s.ref.label }, Number.isFinite(s.bufferCapacity) ? s.bufferCapacity : -1]),
    );
    gauge(METRIC_NAMES.stageMailbox, 'Messages waiting in a stage mailbox.', ['stage'], () =>
      stages().map((s) => [{ stage: s.ref.label }, s.mailbox]),
    );
    gauge(METRIC_NAMES.stageLastEvent, 'When a stage last received events (Unix seconds).', ['stage'], () =>
      stages()
        .filter((s) => s.lastEventAtMs !== undefined)
        .map((s) => [{ stage: s.ref.label }, (s.lastEventAtMs as number) / 1000]),
    );
    gauge(METRIC_NAMES.subscriptionDemand, 'Events a consumer asked for and its producer has not sent yet.', ['producer', 'consumer'], () =>
      stages().flatMap((s) =>
        s.downstream.map((d): [Record<string, string>, number] => [{ producer: s.ref.label, consumer: d.consumer }, d.asked - d.sent]),
      ),
    );
    const transport = () => options.fabric()?.transport.stats;
    const byType = (way: 'sent' | 'received', field: 'messages' | 'bytes') => (): [Record<string, string>, number][] => {
      const stats = transport();
      return stats === undefined ? [] : [...stats[way]].map(([type, c]) => [{ type, direction: way }, c[field]]);
    };
    mirrored(METRIC_NAMES.transportMessages, 'Wire messages by type and direction.', ['type', 'direction'], () => [
      ...byType('sent', 'messages')(),
      ...byType('received', 'messages')(),
    ]);
    mirrored(METRIC_NAMES.transportBytes, 'Wire bytes by message type and direction.', ['type', 'direction'], () => [
      ...byType('sent', 'bytes')(),
      ...byType('received', 'bytes')(),
    ]);
    const scalar = (read: (s: NonNullable<ReturnType<typeof transport>>) => number) => (): [Record<string, string>, number][] => {
      const s = transport();
      return s === undefined ? [] : [[{}, read(s)]];
    };
    mirrored(
      METRIC_NAMES.transportRedeliveries,
      'Inbox entries delivered again after a restart.',
      [],
      scalar((s) => s.redeliveries),
    );
    mirrored(
      METRIC_NAMES.transportDeadLetters,
      'Inbox entries moved to the dead-letter stream, by reason: malformed, oversized, unauthentic, trimmed, refused, failed.',
      ['reason'],
      () => {
        const s = transport();
        return s === undefined ? [] : DEAD_LETTER_KINDS.map((kind) => [{ reason: kind }, s.deadLettersByKind.get(kind) ?? 0]);
      },
    );
    mirrored(
      METRIC_NAMES.transportSendRetries,
      'Sends Redis refused (out of memory, a lost connection) that were tried again.',
      [],
      scalar((s) => s.sendRetries),
    );
    mirrored(
      METRIC_NAMES.transportSendFailures,
      'Messages given up on after their retries; each ended its subscription, made anew.',
      [],
      scalar((s) => s.sendFailures),
    );
    const fabricStats = () => options.fabric()?.stats;
    mirrored(METRIC_NAMES.fabricRefusedAsks, "Asks refused for going beyond their subscription's maxDemand.", [], () => {
      const f = fabricStats();
      return f === undefined ? [] : [[{}, f.refusedAsks]];
    });
    mirrored(
      METRIC_NAMES.fabricHeartbeatsRefused,
      'Heartbeat readings not taken, by reason: malformed, unauthentic, stale (an earlier incarnation).',
      ['reason'],
      () => {
        const f = fabricStats();
        return f === undefined
          ? []
          : (['malformed', 'unauthentic', 'stale'] as const).map((k) => [{ reason: k }, f.heartbeatsRefused.get(k) ?? 0]);
      },
    );
    mirrored(METRIC_NAMES.fabricAuthFailures, "Inbox entries and heartbeats without a valid MAC for the fabric's secret.", ['what'], () => {
      const f = fabricStats();
      const s = transport();
      if (f === undefined || s === undefined) return [];
      return [
        [{ what: 'message' }, s.deadLettersByKind.get('unauthentic') ?? 0],
        [{ what: 'heartbeat' }, f.heartbeatsRefused.get('unauthentic') ?? 0],
      ];
    });
    mirrored(
      METRIC_NAMES.fabricHeldDropped,
      'Events held for consumers that had not subscribed again, dropped as the hold was full.',
      [],
      () => {
        const f = fabricStats();
        return f === undefined ? [] : [[{}, f.orphanEventsDropped]];
      },
    );
    mirrored(
      METRIC_NAMES.transportReconnects,
      'Reconnections to Redis.',
      [],
      scalar((s) => s.reconnects),
    );
    gauge(METRIC_NAMES.inboxEntries, 'Entries in a local inbox stream, pending ones included.', ['inbox'], () => this.sources.inboxEntries);
    gauge(METRIC_NAMES.inboxPending, 'Entries of a local inbox read and not yet acknowledged.', ['inbox'], () => this.sources.inboxPending);
    gauge(
      METRIC_NAMES.metricsSourceUp,
      'Whether a source of this scrape (redis, task_store) answered in time; its series are left out when it did not.',
      ['source'],
      () => this.sources.up,
    );
    gauge(METRIC_NAMES.fabricHeldEvents, 'Events held for consumers that have not subscribed again yet.', [], () => {
      const f = fabricStats();
      return f === undefined ? [] : [[{}, f.heldEvents]];
    });
    gauge(METRIC_NAMES.fabricHeldBytes, 'Bytes (as on the wire) of the events held so.', [], () => {
      const f = fabricStats();
      return f === undefined ? [] : [[{}, f.heldBytes]];
    });
    gauge(METRIC_NAMES.nodeUp, 'This agent is running.', [], () => [[{}, 1]]);
    gauge(METRIC_NAMES.nodeHeartbeat, 'When this agent last beat (Unix seconds).', [], () => {
      const at = options.fabric()?.lastBeatAtMs;
      return at === undefined ? [] : [[{}, at / 1000]];
    });
    gauge(
      METRIC_NAMES.tasks,
      'Tasks in the store by queue and state, exact (finished states from counters the store keeps as tasks move, not a scan).',
      ['queue', 'state'],
      () => this.sources.tasks,
    );
    this.started = new Counter({
      name: METRIC_NAMES.tasksStarted,
      help: 'Tasks this node started.',
      labelNames: ['queue'],
      registers: [r],
    });
    this.finished = new Counter({
      name: METRIC_NAMES.tasksFinished,
      help: 'Task attempts this node finished, by outcome (success, retry, error, timeout).',
      labelNames: ['queue', 'outcome'],
      registers: [r],
    });
    const taskBuckets = [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300];
    this.runDuration = new Histogram({
      name: METRIC_NAMES.taskRunDuration,
      help: 'Time a task attempt ran.',
      labelNames: ['queue'],
      buckets: taskBuckets,
      registers: [r],
    });
    this.queueWait = new Histogram({
      name: METRIC_NAMES.taskQueueWait,
      help: 'Time from enqueue to the start of a task attempt.',
      labelNames: ['queue'],
      buckets: taskBuckets,
      registers: [r],
    });
    this.refused = new Counter({
      name: METRIC_NAMES.taskOutcomesRefused,
      help: 'Task outcomes the store refused because the run no longer held the task, by reason (lease-lost, finished, not-found).',
      labelNames: ['queue', 'reason'],
      registers: [r],
    });
    this.leasesLost = new Counter({
      name: METRIC_NAMES.taskLeasesLost,
      help: "Tasks in this node's hands whose lease the store no longer honoured, by phase (handover, prefetched: not run; running: aborted).",
      labelNames: ['queue', 'phase'],
      registers: [r],
    });
    this.storeErrors = new Counter({
      name: METRIC_NAMES.taskStoreErrors,
      help: 'Task store calls that failed (each logged, and tried again), by who made them: producer, runner, store, retention, schedules.',
      labelNames: ['source'],
      registers: [r],
    });
    this.leasesRecovered = new Counter({
      name: METRIC_NAMES.taskLeasesRecovered,
      help: "Tasks whose lease lapsed that this node's producer put back to waiting or failed on their last attempt.",
      registers: [r],
    });
    this.eventsDropped = new Counter({
      name: METRIC_NAMES.taskEventsDropped,
      help: 'Events a task runner dropped without running: not a claimed task, or a claim it already held.',
      registers: [r],
    });
    this.consoleActions = new Counter({
      name: METRIC_NAMES.consoleActions,
      help: 'Actions asked of the web console (retry, cancel, pause, resume, sign-in), done or refused.',
      labelNames: ['action', 'outcome'],
      registers: [r],
    });
    this.tasksPruned = new Counter({
      name: METRIC_NAMES.tasksPruned,
      help: "Finished tasks this node's retention deleted, by state (error+timeout+cancelled together on BullMQ).",
      labelNames: ['state'],
      registers: [r],
    });
    this.scheduleFires = new Counter({
      name: METRIC_NAMES.scheduleFires,
      help: "Schedule fires this node's scheduler enqueued, by result (enqueued; duplicate: the task's uniqueKey was still held).",
      labelNames: ['schedule', 'result'],
      registers: [r],
    });
    this.scheduleFiresSkipped = new Counter({
      name: METRIC_NAMES.scheduleFiresSkipped,
      help: "Schedule fires missed while no agent ran, beyond the schedule's backfill, that this node's scheduler skipped.",
      labelNames: ['schedule'],
      registers: [r],
    });
    new Gauge({ name: METRIC_NAMES.buildInfo, help: 'Version of the agent.', labelNames: ['version', 'nodejs'], registers: [r] }).set(
      { version: VERSION, nodejs: process.version },
      1,
    );
  }

  taskStarted(task: ClaimedTask): void {
    this.started.inc({ queue: task.queue });
    this.queueWait.observe({ queue: task.queue }, Math.max(0, (Date.now() - task.enqueuedAt.getTime()) / 1000));
  }

  /** outcome: success, retry (failed with attempts left), error or timeout (failed for good). */
  taskRecorded(task: ClaimedTask, outcome: TaskOutcomeRecord, durationMs: number): void {
    const label = outcome.status !== 'success' && outcome.retryAt !== undefined ? 'retry' : outcome.status;
    this.finished.inc({ queue: task.queue, outcome: label });
    this.runDuration.observe({ queue: task.queue }, durationMs / 1000);
  }

  taskOutcomeRefused(task: ClaimedTask, reason: RefusalReason): void {
    this.refused.inc({ queue: task.queue, reason });
  }

  taskLeaseLost(task: ClaimedTask, phase: LeaseLossPhase): void {
    this.leasesLost.inc({ queue: task.queue, phase });
  }

  taskStoreError(source: string): void {
    this.storeErrors.inc({ source });
  }

  taskLeasesRecovered(count: number): void {
    this.leasesRecovered.inc(count);
  }

  taskEventDropped(): void {
    this.eventsDropped.inc();
  }

  tasksPrunedBy(states: readonly string[], count: number): void {
    this.tasksPruned.inc({ state: states.join('+') }, count);
  }

  scheduleFired(schedule: string, duplicate: boolean): void {
    this.scheduleFires.inc({ schedule, result: duplicate ? 'duplicate' : 'enqueued' });
  }

  scheduleSkipped(schedule: string, count: number): void {
    this.scheduleFiresSkipped.inc({ schedule }, count);
  }

  /** An action asked of the console served by this agent; `action` is one of a fixed set. */
  consoleAction(action: string, outcome: 'done' | 'refused'): void {
    this.consoleActions.inc({ action, outcome });
  }

  /** The exposition; what it reads from Redis and the task store is waited for METRICS_SOURCE_TIMEOUT_MS at most. */
  async render(): Promise<string> {
    this.sources = await this.readSources();
    return this.registry.metrics();
  }

  private async readSources(): Promise<Sources> {
    const up: [Record<string, string>, number][] = [];
    const fabric = this.options.fabric();
    let inboxEntries: [Record<string, string>, number][] = [];
    let inboxPending: [Record<string, string>, number][] = [];
    const reads: Promise<void>[] = [];
    if (fabric !== undefined) {
      const inboxes = this.options.inboxes();
      reads.push(
        within(
          Promise.all(
            inboxes.map(async (inbox) => [await fabric.transport.inboxLength(inbox), await fabric.transport.inboxPending(inbox)] as const),
          ),
          METRICS_SOURCE_TIMEOUT_MS,
        ).then(
          (counts) => {
            inboxEntries = counts.map(([entries], i) => [{ inbox: inboxes[i] as string }, entries]);
            inboxPending = counts.map(([, pending], i) => [{ inbox: inboxes[i] as string }, pending]);
            up.push([{ source: 'redis' }, 1]);
          },
          () => void up.push([{ source: 'redis' }, 0]),
        ),
      );
    }
    let tasks: [Record<string, string>, number][] = [];
    const store = this.options.taskStore();
    if (store !== undefined) {
      reads.push(
        within(store.counts(), METRICS_SOURCE_TIMEOUT_MS).then(
          (counts) => {
            tasks = counts.map((c): [Record<string, string>, number] => [{ queue: c.queue, state: c.state }, c.count]);
            up.push([{ source: 'task_store' }, 1]);
          },
          () => void up.push([{ source: 'task_store' }, 0]),
        ),
      );
    }
    await Promise.all(reads);
    return { inboxEntries, inboxPending, tasks, up };
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
