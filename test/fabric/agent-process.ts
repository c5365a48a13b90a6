import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/** The repository, found from here whether this runs from source or compiled (the fuzz script runs it from test/chaos/dist). */
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
export const STAGES = join(ROOT, 'test/fabric/stages.mjs');

/** One agent process (`stagectl up --node NAME`), with its output kept for assertions. */
export class AgentProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(topology: string, node: string, env: Record<string, string>, args: readonly string[] = []) {
    this.child = spawn(process.execPath, [STAGECTL, 'up', topology, '--node', node, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    // 'close', not 'exit': by then every line the process wrote has been read.
    this.exited = new Promise((r) => this.child.on('close', (code) => r(code)));
    running.add(this);
    void this.exited.then(() => running.delete(this));
  }

  /** Log lines (pino JSON) with this message. */
  logs(msg: string): Record<string, unknown>[] {
    return this.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === msg);
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    this.child.kill(signal);
    return this.exited;
  }
}

const running = new Set<AgentProcess>();

const folders = new Set<string>();

/** Kills every agent a test left behind and removes the test's folders; returns how many agents there were. */
export async function killAll(): Promise<number> {
  const left = [...running];
  await Promise.all(left.map((a) => a.kill('SIGKILL')));
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
  folders.clear();
  return left.length;
}

/** A fabric of its own for one test: a namespace on the shared Redis and a folder for topology and records. */
export async function testFabric(redisUrl: string) {
  const dir = await mkdtemp(join(tmpdir(), 'sf-fabric-'));
  folders.add(dir);
  const namespace = `t${randomUUID().slice(0, 8)}`;
  return {
    dir,
    namespace,
    file: (name: string) => join(dir, name),
    async topology(yaml: string): Promise<string> {
      const path = join(dir, `topology-${randomUUID().slice(0, 6)}.yaml`);
      await writeFile(path, yaml);
      return path;
    },
    agent(topology: string, node: string, env: Record<string, string> = {}, args: readonly string[] = []): AgentProcess {
      return new AgentProcess(topology, node, { REDIS_URL: redisUrl, STAGEFABRIC_NAMESPACE: namespace, LOG_LEVEL: 'info', ...env }, args);
    },
  };
}

export interface Recorded {
  readonly pid: number;
  readonly events?: number[];
  readonly cancel?: { kind: string; reason: string };
  readonly started?: number;
}

/**
 * What a recorder stage wrote to its file: its complete lines. A line without
 * its newline yet is one an agent is writing as this reads; it is read next time.
 */
export function readRecords(file: string): Recorded[] {
  if (!existsSync(file)) return [];
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.pop();
  return lines.filter((l) => l !== '').map((l) => JSON.parse(l) as Recorded);
}

export function handled(file: string): number[] {
  return readRecords(file).flatMap((r) => r.events ?? []);
}

export { waitFor } from '../support/wait-for.js';
