import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Host } from './network.js';

/** The repository, found from here whether this runs from source or compiled. */
export const ROOT = (() => {
  let dir = import.meta.dirname;
  while (!existsSync(join(dir, 'turbo.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no repository root above ${import.meta.dirname}`);
    dir = up;
  }
  return dir;
})();
const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');

export interface AgentConfig {
  readonly topology: string;
  readonly env: Record<string, string>;
  readonly dir: string;
  readonly metricsPort: number;
  /** Called when the agent exits without the harness having killed or stopped it. */
  readonly onUnexpectedExit: (agent: ChaosAgent, code: number | null, signal: NodeJS.Signals | null) => void;
}

/** One host's agent (`stagectl up --node HOST`), which the harness kills, pauses and starts again. */
export class ChaosAgent {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private expectingExit = false;
  paused = false;
  starts = 0;
  readonly auditFile: string;
  readonly logFile: string;

  constructor(
    readonly host: Host,
    private readonly config: AgentConfig,
  ) {
    this.auditFile = join(config.dir, `demand-${host.name}.jsonl`);
    this.logFile = join(config.dir, `agent-${host.name}.log`);
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get metricsUrl(): string {
    return `http://${this.host.address}:${this.config.metricsPort}/metrics`;
  }

  start(): void {
    if (this.child !== undefined) return;
    const { file, args } = this.host.command([
      process.execPath,
      STAGECTL,
      'up',
      this.config.topology,
      '--node',
      this.host.name,
      '--metrics-port',
      String(this.config.metricsPort),
      // Metrics listen on loopback unless told: the harness reads each agent's heap at its host's address.
      '--metrics-host',
      this.host.address,
      '--demand-audit',
      this.auditFile,
    ]);
    const log = openSync(this.logFile, 'a');
    const child = spawn(file, args, {
      cwd: ROOT,
      env: { ...process.env, ...this.config.env, STAGEFABRIC_NODE: this.host.name },
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.child = child;
    this.starts++;
    this.expectingExit = false;
    this.paused = false;
    this.exited = new Promise((done) =>
      child.once('exit', (code, signal) => {
        this.child = undefined;
        if (!this.expectingExit) this.config.onUnexpectedExit(this, code, signal);
        done();
      }),
    );
  }

  /** kill -9, as a crashed host. */
  async kill(): Promise<void> {
    if (this.child === undefined) return;
    this.expectingExit = true;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  pause(): void {
    if (this.child === undefined || this.paused) return;
    this.child.kill('SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (this.child === undefined || !this.paused) return;
    this.child.kill('SIGCONT');
    this.paused = false;
  }

  /** A graceful stop (SIGTERM); SIGKILL if it has not exited within `graceMs`. Resolves with how it ended. */
  async stop(graceMs = 30_000): Promise<'graceful' | 'killed' | 'not running'> {
    const child = this.child;
    if (child === undefined) return 'not running';
    this.resume();
    this.expectingExit = true;
    let code: number | null = null;
    child.once('exit', (c) => {
      code = c;
    });
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
    return code === 0 ? 'graceful' : 'killed';
  }

  /** The agent's heap in use, from its own /metrics; undefined when it does not answer. */
  async heapBytes(): Promise<number | undefined> {
    if (this.child === undefined || this.paused) return undefined;
    try {
      const res = await fetch(this.metricsUrl, { signal: AbortSignal.timeout(5000) });
      const text = await res.text();
      const line = text.split('\n').find((l) => l.startsWith('stagefabric_nodejs_heap_size_used_bytes'));
      return line === undefined ? undefined : Number(line.split(' ').pop());
    } catch {
      return undefined;
    }
  }
}
