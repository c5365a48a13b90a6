import { EventEmitter } from 'node:events';
import { FabricError } from './errors.js';
import { badOption, isPositiveInteger } from './options.js';
import type { AnyStageSpec } from './spec.js';
import type { StageSystem } from './system.js';
import { type ExitReason, isCleanExit, type StageRef } from './types.js';

/** When a child is restarted: always, only after a crash, or never. */
export type RestartPolicy = 'permanent' | 'transient' | 'temporary';

export interface ChildSpec {
  /** Unique among the supervisor's children. */
  readonly id: string;
  readonly spec: AnyStageSpec;
  readonly args?: unknown;
  /** Registered name; a restarted child takes the same name, so subscribers find it again. */
  readonly name?: string;
  /** Default 'permanent'. */
  readonly restart?: RestartPolicy;
}

export interface SupervisorOptions {
  /** Only 'one_for_one': a crashed child is restarted alone. */
  readonly strategy?: 'one_for_one';
  /** Restarts allowed within `maxSeconds` before the supervisor gives up. Default 3. */
  readonly maxRestarts?: number;
  /** Default 5. */
  readonly maxSeconds?: number;
}

export const SUPERVISOR_DEFAULTS = { strategy: 'one_for_one', maxRestarts: 3, maxSeconds: 5 } as const;

export type SupervisorEvent =
  | { readonly type: 'restart'; readonly child: string; readonly reason: ExitReason }
  | { readonly type: 'restart-failed'; readonly child: string; readonly error: unknown }
  | { readonly type: 'gave-up'; readonly error: FabricError };

interface ChildState {
  readonly child: ChildSpec;
  ref: StageRef | undefined;
  restarts: number;
}

/**
 * Restarts crashed stages (OTP's one_for_one). Children start in order; a
 * restarted consumer runs its init again, so its `subscribeTo` subscribes
 * it anew. Past the restart intensity the supervisor stops every child and
 * reports `gave-up`.
 */
export class Supervisor extends EventEmitter<{ event: [SupervisorEvent] }> {
  private readonly children: ChildState[] = [];
  private readonly restartTimes: number[] = [];
  private readonly maxRestarts: number;
  private readonly maxSeconds: number;
  private stopping = false;
  private work: Promise<void> = Promise.resolve();
  private failure: FabricError | undefined;

  private constructor(
    private readonly system: StageSystem,
    options: SupervisorOptions,
  ) {
    super();
    const where = 'supervisor';
    if ((options.strategy ?? 'one_for_one') !== 'one_for_one')
      throw badOption(where, 'strategy', options.strategy, "must be 'one_for_one'");
    this.maxRestarts = options.maxRestarts ?? SUPERVISOR_DEFAULTS.maxRestarts;
    this.maxSeconds = options.maxSeconds ?? SUPERVISOR_DEFAULTS.maxSeconds;
    if (!Number.isInteger(this.maxRestarts) || this.maxRestarts < 0)
      throw badOption(where, 'maxRestarts', this.maxRestarts, 'must be a non-negative integer');
    if (!isPositiveInteger(this.maxSeconds)) throw badOption(where, 'maxSeconds', this.maxSeconds, 'must be a positive integer');
  }

  /** Starts every child in order; if one fails to start, the ones started are stopped and the error is thrown. */
  static async start(system: StageSystem, children: readonly ChildSpec[], options: SupervisorOptions = {}): Promise<Supervisor> {
    const supervisor = new Supervisor(system, options);
    const ids = new Set<string>();
    for (const child of children) {
      if (ids.has(child.id)) throw badOption('supervisor', 'children', child.id, 'child ids must be unique');
      ids.add(child.id);
    }
    for (const child of children) {
      const state: ChildState = { child, ref: undefined, restarts: 0 };
      supervisor.children.push(state);
      try {
        await supervisor.launch(state);
      } catch (error) {
        await supervisor.stop();
        throw error;
      }
    }
    return supervisor;
  }

  /** The running ref of a child, by id. */
  which(id: string): StageRef | undefined {
    return this.children.find((c) => c.child.id === id)?.ref;
  }

  /** Children with their current refs and restart counts. */
  list(): readonly { readonly id: string; readonly ref: StageRef | undefined; readonly restarts: number }[] {
    return this.children.map((c) => ({ id: c.child.id, ref: c.ref, restarts: c.restarts }));
  }

  /** Set once the supervisor gave up. */
  get error(): FabricError | undefined {
    return this.failure;
  }

  /** Resolves when restarts in progress have finished. */
  settled(): Promise<void> {
    return this.work;
  }

  /** Stops the children in reverse start order. Idempotent. */
  async stop(reason: ExitReason = 'shutdown'): Promise<void> {
    this.stopping = true;
    await this.work;
    for (const c of [...this.children].reverse()) {
      if (c.ref !== undefined) await this.system.stop(c.ref, reason);
      c.ref = undefined;
    }
  }

  private async launch(state: ChildState): Promise<void> {
    const { child } = state;
    const options = child.name === undefined ? {} : { name: child.name };
    const ref = await this.system.start(child.spec, child.args, options);
    state.ref = ref;
    this.system.monitor(ref, (reason) => {
      if (state.ref !== ref) return;
      state.ref = undefined;
      this.work = this.work.then(() => this.onExit(state, reason));
    });
  }

  private async onExit(state: ChildState, reason: ExitReason): Promise<void> {
    if (this.stopping) return;
    const policy = state.child.restart ?? 'permanent';
    if (policy === 'temporary' || (policy === 'transient' && isCleanExit(reason))) return;
    let cause: unknown = reason;
    for (;;) {
      if (!this.allowRestart()) {
        await this.giveUp(state.child.id, cause);
        return;
      }
      state.restarts++;
      this.emit('event', { type: 'restart', child: state.child.id, reason: cause as ExitReason });
      try {
        await this.launch(state);
        return;
      } catch (error) {
        cause = error;
        this.emit('event', { type: 'restart-failed', child: state.child.id, error });
      }
    }
  }

  /** Records a restart; false once more than maxRestarts fall within maxSeconds. */
  private allowRestart(): boolean {
    const now = this.system.clock.now();
    const windowStart = now - this.maxSeconds * 1000;
    while (this.restartTimes.length > 0 && (this.restartTimes[0] as number) <= windowStart) this.restartTimes.shift();
    this.restartTimes.push(now);
    return this.restartTimes.length <= this.maxRestarts;
  }

  private async giveUp(childId: string, cause: unknown): Promise<void> {
    this.failure = new FabricError(
      'SF_RESTART_INTENSITY',
      `supervisor gave up: child ${childId} needed more than ${this.maxRestarts} restarts in ${this.maxSeconds} s`,
      { cause },
    );
    this.stopping = true;
    for (const c of [...this.children].reverse()) {
      if (c.ref !== undefined) await this.system.stop(c.ref, 'shutdown');
      c.ref = undefined;
    }
    this.emit('event', { type: 'gave-up', error: this.failure });
  }
}
