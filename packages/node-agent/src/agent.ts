import { hostname } from 'node:os';
import type { Transport } from '@stagefabric/fabric';
import { demandAuditFile, type FabricEvent, FabricNode } from '@stagefabric/fabric';
import {
  type AnyStageSpec,
  type ChildSpec,
  type Clock,
  type ExitReason,
  type InitResult,
  type StageContext,
  StageSystem,
  type SubscribeOptions,
  Supervisor,
  type SystemEvent,
} from '@stagefabric/runtime';
import type { TaskStore } from '@stagefabric/tasks';
import type { Logger } from './logger.js';
import { AgentMetrics } from './metrics.js';
import { loadStageSpec, StageLoadError } from './stage-loader.js';
import { TaskHost } from './task-host.js';
import type { Topology, TopologyStage } from './topology.js';

export interface AgentOptions {
  readonly topology: Topology;
  /** Joins the fabric through this transport; without one, every stage runs here, in one process. */
  readonly transport?: Transport;
  /** Heartbeat period on the fabric. Default 1000 ms. */
  readonly heartbeatMs?: number;
  /** The task store's PostgreSQL; the embedded PGlite store when absent. */
  readonly databaseUrl?: string | undefined;
  /** Redis for `tasks: { store: bullmq }`. */
  readonly redisUrl?: string | undefined;
  /** A task store of the caller's instead (tests, embedding). */
  readonly taskStore?: TaskStore;
  /** This node's name in the fabric. Default: the host name. */
  readonly node?: string;
  readonly logger: Logger;
  readonly clock?: Clock;
  /** Appends what each remote subscription asked for and received to this file every heartbeat (see demandAuditFile). */
  readonly demandAudit?: string | undefined;
  /** The grace period of stop(): past it, what is left is dropped and the stop ends. Default 45 000 ms. */
  readonly stopTimeoutMs?: number;
}

export const AGENT_DEFAULTS = {
  /** Within Kubernetes' 60 s grace period, with the task drain's 30 s inside it. */
  stopTimeoutMs: 45_000,
  /** Longest /readyz waits for Redis before it answers 503. */
  readinessTimeoutMs: 500,
} as const;

/** Whether `promise` settled within `ms` (it goes on regardless). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  const settled = promise.then(
    () => true as const,
    () => true as const,
  );
  try {
    return await Promise.race([settled, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The name of replica `index` of a stage: the stage name itself when it has one replica. */
export function replicaName(stage: string, replicas: number, index: number): string {
  return replicas === 1 ? stage : `${stage}/${index}`;
}

/** Orders stages so every stage starts after the stages it subscribes to. */
function startOrder(topology: Topology): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, chain: string[]) => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') throw new StageLoadError(`subscriptions form a cycle: ${[...chain, name].join(' -> ')}`);
    state.set(name, 'visiting');
    for (const sub of topology.stages[name]?.subscribe ?? []) visit(sub.to, [...chain, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const name of Object.keys(topology.stages)) visit(name, []);
  return order;
}

/**
 * Wraps a stage's init: adds the topology's subscriptions to its own, so a
 * restart resubscribes too, and while the agent boots holds producers'
 * demand, so no events flow before every stage is up and subscribed.
 */
function forTopology(
  spec: AnyStageSpec,
  extra: readonly SubscribeOptions[],
  booting: () => boolean,
  held: (name: string) => void,
): AnyStageSpec {
  const init = spec.init;
  return {
    ...spec,
    init: async (args: unknown, ctx: StageContext) => {
      const result = (await init.call(spec, args, ctx as never)) as InitResult<unknown, 'producer_consumer'>;
      const out: Record<string, unknown> = { ...result };
      if (extra.length > 0) out.subscribeTo = [...(result.subscribeTo ?? []), ...extra];
      if (spec.kind === 'producer' && booting() && result.demand === undefined) {
        out.demand = 'accumulate';
        held(ctx.self.label);
      }
      return out;
    },
  } as unknown as AnyStageSpec;
}

/**
 * Hosts a topology's stages on this node under one supervisor. Stages that
 * exit for good end the agent's `done`; a graceful stop cancels consumers
 * first so nothing in hand is dropped.
 */
export class Agent {
  readonly system: StageSystem;
  readonly node: string;
  readonly done: Promise<ExitReason>;
  readonly metrics: AgentMetrics;
  /** The task runner of this node, when the topology has `tasks`. */
  tasks: TaskHost | undefined;
  private booted = false;
  private resolveDone: (reason: ExitReason) => void = () => {};
  private supervisor: Supervisor | undefined;
  readonly fabric: FabricNode | undefined;
  private stopping: Promise<void> | undefined;
  /** Set when stop() ran past its grace period and dropped what was left. */
  stopTimedOut = false;

  private constructor(
    private readonly options: AgentOptions,
    node: string,
  ) {
    this.node = node;
    let fabric: FabricNode | undefined;
    this.metrics = new AgentMetrics({
      node,
      system: () => this.system,
      fabric: () => this.fabric,
      inboxes: () => (this.fabric === undefined ? [] : this.system.list().map((s) => `${s.label}@${node}`)),
      taskStore: () => this.tasks?.store,
    });
    this.system = new StageSystem({
      ...(options.clock === undefined ? {} : { clock: options.clock }),
      resolve: (name) => fabric?.resolve(name),
      observer: this.metrics.observer,
    });
    if (options.transport !== undefined) {
      fabric = new FabricNode({
        node,
        transport: options.transport,
        system: this.system,
        ...(options.heartbeatMs === undefined ? {} : { heartbeatMs: options.heartbeatMs }),
        ...(options.demandAudit === undefined ? {} : { audit: demandAuditFile(options.demandAudit, node) }),
      });
    }
    this.fabric = fabric;
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
  }

  static async start(options: AgentOptions): Promise<Agent> {
    const agent = new Agent(options, options.node ?? hostname());
    try {
      await agent.boot();
    } catch (error) {
      // What boot opened goes, within the grace period: a failed start leaves no connection retrying behind it.
      await agent.stop();
      throw error;
    }
    return agent;
  }

  private async boot(): Promise<void> {
    const { topology, logger } = this.options;
    this.tasks = await TaskHost.open({
      topology,
      node: this.node,
      logger,
      databaseUrl: this.options.databaseUrl,
      redisUrl: this.options.redisUrl,
      ...(this.options.taskStore === undefined ? {} : { store: this.options.taskStore }),
      onStarted: (task) => this.metrics.taskStarted(task),
      onRecorded: (task, outcome, ms) => this.metrics.taskRecorded(task, outcome, ms),
      onOutcomeRefused: (task, reason) => this.metrics.taskOutcomeRefused(task, reason),
      onLeaseLost: (task, phase) => this.metrics.taskLeaseLost(task, phase),
      onDropped: () => this.metrics.taskEventDropped(),
      onRecovered: (count) => this.metrics.taskLeasesRecovered(count),
      onPruned: (pruned) => this.metrics.tasksPrunedBy(pruned.states, pruned.count),
      onScheduleFired: (schedule, duplicate) => this.metrics.scheduleFired(schedule.name, duplicate),
      onScheduleSkipped: (schedule, count) => this.metrics.scheduleSkipped(schedule.name, count),
      onStoreError: (source) => this.metrics.taskStoreError(source),
    });
    const builtins = this.tasks?.builtins ?? new Map();
    const specs = new Map<string, AnyStageSpec>();
    for (const [name, stage] of Object.entries(topology.stages)) specs.set(name, await loadStageSpec(topology, name, stage, builtins));
    for (const [name, stage] of Object.entries(topology.stages)) {
      for (const { to } of stage.subscribe) {
        if (specs.get(name)?.kind === 'producer') {
          throw new StageLoadError(`stage ${name}: is a producer, so it cannot subscribe to ${to}`);
        }
        if (specs.get(to)?.kind === 'consumer') throw new StageLoadError(`stage ${name}: subscribes to ${to}, which is a consumer`);
      }
    }
    const children: ChildSpec[] = [];
    let booting = true;
    const heldProducers: string[] = [];
    for (const name of startOrder(topology)) {
      const stage = topology.stages[name];
      const spec = specs.get(name);
      if (stage === undefined || spec === undefined || !this.runsHere(stage)) continue;
      // A subscription to a replicated stage subscribes to every replica, on every node that runs it. Replicas that stay
      // down once they exit cleanly (restart transient or temporary) are one producer to it (one group): it follows a
      // clean exit only once the last has handed on its events. A permanent replica comes back after a clean exit, so
      // the consumer follows it out as GenStage does, and its restart subscribes it to the new replica.
      const subscriptions = stage.subscribe.flatMap((options) => {
        const group = topology.stages[options.to]?.restart === 'permanent' ? {} : { group: options.to };
        return this.instancesOf(options.to).map((to): SubscribeOptions => ({ ...stripUndefined(options), to, ...group }));
      });
      for (let i = 0; i < stage.replicas; i++) {
        const instance = replicaName(name, stage.replicas, i);
        // A built-in keeps state of its own (leases, outcome batches): one spec per instance.
        const own = i === 0 || !stage.module.startsWith('stagefabric:') ? spec : await loadStageSpec(topology, name, stage, builtins);
        const wrapped = forTopology(
          own,
          subscriptions,
          () => booting,
          (held) => heldProducers.push(held),
        );
        children.push({ id: instance, name: instance, spec: wrapped, args: stage.args, restart: stage.restart });
      }
    }
    this.system.on('event', (event) => this.log(event));
    this.fabric?.on('event', (event) => this.logFabric(event));
    await this.fabric?.open(children.map((c) => c.id));
    this.supervisor = await Supervisor.start(this.system, children, topology.supervisor);
    await this.fabric?.ready();
    booting = false;
    for (const name of heldProducers) if (this.system.whereis(name)) this.system.setDemandMode(name, 'forward');
    this.supervisor.on('event', (event) => {
      if (event.type === 'restart') logger.warn({ stage: event.child, reason: describeReason(event.reason) }, 'stage restarted');
      else if (event.type === 'restart-failed') logger.warn({ stage: event.child, err: event.error }, 'stage restart failed');
      else {
        logger.error({ err: event.error }, 'supervisor gave up');
        this.resolveDone(event.error);
      }
    });
    logger.info({ stages: children.map((c) => c.id), transport: this.fabric === undefined ? 'in-process' : 'fabric' }, 'agent started');
    this.booted = true;
    const tasks = this.tasks;
    if (tasks?.onStart !== undefined) {
      Promise.resolve()
        .then(() => tasks.onStart?.({ store: tasks.store, stop: () => this.stop(), node: this.node, stages: children.map((c) => c.id) }))
        .catch((error: Error) => logger.error({ err: error }, 'tasks onStart failed'));
    }
  }

  /** In one process every stage runs here; on a fabric, those placed on this node or on every node. */
  private runsHere(stage: TopologyStage): boolean {
    return this.fabric === undefined || stage.nodes === undefined || stage.nodes.includes(this.node);
  }

  /** The instance names to subscribe to for a stage: local names here, `name@node` elsewhere. */
  private instancesOf(stageName: string): string[] {
    const stage = this.options.topology.stages[stageName];
    if (stage === undefined) return [];
    const nodes = this.fabric === undefined || stage.nodes === undefined ? [this.node] : stage.nodes;
    return nodes.flatMap((node) =>
      Array.from({ length: stage.replicas }, (_, i) => {
        const instance = replicaName(stageName, stage.replicas, i);
        return node === this.node ? instance : `${instance}@${node}`;
      }),
    );
  }

  private logFabric(event: FabricEvent): void {
    const { logger } = this.options;
    switch (event.type) {
      case 'node-down':
        logger.warn({ peer: event.node, reason: event.reason }, 'node down: its subscriptions are cancelled with noconnection');
        return;
      case 'node-up':
        logger.info({ peer: event.node }, 'node up');
        return;
      case 'cut-off':
        logger.warn(
          { silentMs: event.silentMs },
          'this node could not beat past its heartbeat timeout: its subscriptions are ended and made again',
        );
        return;
      case 'dead-letter':
        logger.error(
          { inbox: event.letter.inbox, entry: event.letter.entryId, kind: event.letter.kind, reason: event.letter.reason },
          'inbox entry moved to the dead-letter stream',
        );
        return;
      case 'heartbeat-refused':
        logger.warn({ peer: event.node, reason: event.reason, unauthentic: event.unauthentic }, 'heartbeat refused');
        return;
      case 'name-conflict':
        logger.error({ incarnation: event.incarnation }, 'another node beats under this node’s name');
        return;
      case 'name-wait':
        logger.warn(
          { incarnation: event.incarnation, waitMs: event.waitMs },
          'an earlier beat holds this node’s name: waiting to see whether it is renewed',
        );
        return;
      case 'send-retry':
        logger.warn({ inbox: event.inbox, err: event.error }, 'send failed; retrying');
        return;
      case 'send-failed':
        logger.error(
          { inbox: event.inbox, subscription: event.key, err: event.error },
          'send given up: its subscription is ended and made anew',
        );
        return;
      case 'excess-events':
        logger.error({ subscription: event.key, excess: event.excess }, 'received events beyond demand; held, not handed on');
        return;
      case 'no-stage':
        logger.warn({ inbox: event.inbox, subscription: event.key }, 'subscribe to a stage not running here: cancelled with noproc');
        return;
      case 'transport-error':
        logger.warn({ err: event.error }, 'transport error; retrying');
        return;
      case 'orphans-dropped':
        logger.warn(
          { subscription: event.key, events: event.events },
          'events for a consumer that did not subscribe again were dropped: the hold is full',
        );
        return;
    }
  }

  private log(event: SystemEvent): void {
    const { logger } = this.options;
    switch (event.type) {
      case 'stage-exit':
        if (event.clean) logger.info({ stage: event.stage, reason: describeReason(event.reason) }, 'stage exited');
        else logger.error({ stage: event.stage, err: event.reason }, 'stage crashed');
        void this.checkFinished();
        return;
      case 'buffer-overflow':
        logger.warn(
          { stage: event.stage, dropped: event.dropped, bufferSize: event.bufferSize, keep: event.keep },
          'producer buffer overflow: events dropped',
        );
        return;
      case 'excess-events':
        logger.error({ stage: event.stage, subscription: event.subscription, excess: event.excess }, 'received events beyond demand');
        return;
      case 'callback-error':
        logger.error({ stage: event.stage, callback: event.callback, err: event.error }, 'callback failed');
        return;
    }
  }

  /** Once every stage has exited and none is being restarted, the agent is done. */
  private async checkFinished(): Promise<void> {
    await this.supervisor?.settled();
    await this.system.idle();
    if (this.system.list().length === 0) this.resolveDone('normal');
  }

  /** Ready: booted, not stopping, and (on a fabric) Redis answering within half a second. Names what is missing. */
  async readiness(): Promise<{ ready: boolean; missing: string[] }> {
    const missing: string[] = [];
    if (!this.booted) missing.push('stages not started');
    if (this.stopping !== undefined) missing.push('stopping');
    const fabric = this.fabric;
    if (fabric !== undefined) {
      let seen: Map<string, string> | undefined | 'late';
      const read = fabric.transport.alive([this.node]).then(
        (alive) => {
          seen = alive;
        },
        () => {
          seen = undefined;
        },
      );
      if (!(await settlesWithin(read, AGENT_DEFAULTS.readinessTimeoutMs))) seen = 'late';
      if (seen === 'late') missing.push(`redis: no answer within ${AGENT_DEFAULTS.readinessTimeoutMs} ms`);
      else if (seen?.get(this.node) !== fabric.incarnation) missing.push('redis: heartbeat not readable');
    }
    return { ready: missing.length === 0, missing };
  }

  /**
   * Graceful stop: consumers first (the reverse of start order), then
   * producers, then the fabric and the task store. Idempotent. It ends within
   * its grace period (`stopTimeoutMs`) whatever Redis or PostgreSQL do: past
   * it, connections are dropped and what was left is logged.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const { logger } = this.options;
      const graceMs = this.options.stopTimeoutMs ?? AGENT_DEFAULTS.stopTimeoutMs;
      logger.info({ graceMs }, 'agent stopping');
      const graceful = (async () => {
        await this.supervisor?.stop('shutdown');
        await this.system.shutdown('shutdown');
        await this.fabric?.close();
        await this.tasks?.close();
      })();
      if (!(await settlesWithin(graceful, graceMs))) {
        this.stopTimedOut = true;
        logger.error({ graceMs }, 'stop did not finish within its grace period: dropping the connections and what is left');
        // Each of these bounds its own wait; together, one second more at most.
        await settlesWithin(Promise.allSettled([this.fabric?.close(), this.tasks?.close()]), 1000);
      }
      this.resolveDone('shutdown');
    })();
    return this.stopping;
  }
}

/** Zod leaves absent options as undefined; the runtime wants them absent. */
function stripUndefined(value: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined));
}

function describeReason(reason: unknown): unknown {
  return reason instanceof Error ? reason.message : reason;
}
