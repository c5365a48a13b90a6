/**
 * What the fabric benchmarks share: a redis-server of their own on a free
 * port (so no other work on the machine's Redis is measured with them), node
 * child processes with their output collected, and agents started with
 * `stagectl up` from a topology written for the run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';

export const ROOT = resolve(import.meta.dirname, '../..');
export const STAGECTL = join(ROOT, 'packages/cli/dist/main.js');

export function freePort(): Promise<number> {
  return new Promise((ok) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => ok(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

export interface Child {
  readonly child: ChildProcess;
  /** Its stdout once it exited (with 0, or by SIGTERM); rejects with the end of its stderr otherwise. */
  readonly output: Promise<string>;
}

/** Runs `node <cmd...>` with `env` added to this process's environment. */
export function runNode(cmd: string[], env: Record<string, string> = {}): Child {
  const child = spawn(process.execPath, cmd, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const output = new Promise<string>((ok, fail) =>
    child.on('exit', (code, signal) =>
      code === 0 || signal === 'SIGTERM' ? ok(out) : fail(new Error(`${cmd.join(' ')} exited ${code ?? signal}: ${err.slice(-500)}`)),
    ),
  );
  return { child, output };
}

export interface BenchRedis {
  readonly url: string;
  /** A client for the benchmark's own reads (INFO, keys). */
  readonly admin: Redis;
  /** A directory for the run's files, removed by stop(). */
  readonly dir: string;
  usedMemory(): Promise<number>;
  stop(): Promise<void>;
}

/** Starts a redis-server without persistence on a free loopback port. */
export async function startRedis(): Promise<BenchRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sf-bench-'));
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  const url = `redis://127.0.0.1:${port}`;
  const admin = new Redis(url, { retryStrategy: (n) => (n > 50 ? null : 50) });
  // The server may take a moment to listen; the client retries until it does.
  admin.on('error', () => {});
  await admin.ping();
  return {
    url,
    admin,
    dir,
    usedMemory: async () => Number(/used_memory:(\d+)/.exec(await admin.info('memory'))?.[1]),
    stop: async () => {
      await admin.quit();
      server.kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes a topology file into `dir` and returns its path. */
export function writeTopology(dir: string, name: string, yaml: string): string {
  const path = join(dir, `${name}.yaml`);
  writeFileSync(path, yaml);
  return path;
}

/** Starts one agent: `stagectl up <topology> --node <node>`. */
export function startAgent(topology: string, node: string, env: Record<string, string>, extra: string[] = []): Child {
  return runNode([STAGECTL, 'up', topology, '--node', node, ...extra], { LOG_LEVEL: 'warn', ...env });
}

export const p50 = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Polls `cond` every `everyMs` until it holds or `timeoutMs` passed. */
export async function pollUntil(cond: () => Promise<boolean>, what: string, timeoutMs: number, everyMs = 10): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > deadline) throw new Error(`bench: timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
