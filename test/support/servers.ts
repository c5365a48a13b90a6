import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A server the tests talk to, and how to let it go. */
export interface Server {
  readonly url: string;
  /** How it was found: given by the environment, a container, or a local binary started here. */
  readonly source: 'env' | 'container' | 'local';
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      srv.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/** Sends one RESP command over a raw socket; resolves with the reply line. */
export function redisPing(url: string, timeoutMs = 1000): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on('error', () => done(false));
    socket.on('data', (d) => done(d.toString().startsWith('+PONG')));
    socket.connect(Number(port || 6379), hostname || '127.0.0.1', () => socket.write('*1\r\n$4\r\nPING\r\n'));
  });
}

export function postgresReady(url: string): boolean {
  return spawnSync('psql', [url, '-tAc', 'select 1'], { encoding: 'utf8', timeout: 5000 }).stdout?.trim() === '1';
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function dockerAnswers(): boolean {
  return spawnSync('docker', ['info'], { timeout: 5000, stdio: 'ignore' }).status === 0;
}

function kill(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/** A redis-server of the test run's own, on a free loopback port. */
export async function startLocalRedis(
  extraArgs: readonly string[] = [],
): Promise<Server & { readonly port: number; readonly dir: string; restart(signal?: NodeJS.Signals): Promise<void> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sf-redis-'));
  const url = `redis://127.0.0.1:${port}`;
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs];
  let child = spawn('redis-server', args, { stdio: 'ignore' });
  await until(() => redisPing(url), `redis-server on port ${port}`);
  return {
    url,
    port,
    dir,
    source: 'local',
    /** Stops the server (SIGTERM: it saves what it keeps; SIGKILL: as a crash would) and starts it on the same folder. */
    async restart(signal: NodeJS.Signals = 'SIGTERM') {
      await kill(child, signal);
      child = spawn('redis-server', args, { stdio: 'ignore' });
      await until(() => redisPing(url), `redis-server on port ${port} after restart`);
    },
    async stop() {
      await kill(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function postgresBin(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (existsSync(join(base, v, 'bin', 'postgres'))) return join(base, v, 'bin');
  return undefined;
}

/**
 * A postgres cluster of the test run's own (initdb in a temporary folder), on
 * a free loopback port; also on the `alsoListen` addresses, open to any host.
 */
export async function startLocalPostgres(
  alsoListen: readonly string[] = [],
): Promise<Server & { readonly port: number; crash(): Promise<void>; start(): Promise<void>; restart(): Promise<void> }> {
  const bin = postgresBin();
  if (bin === undefined) throw new Error('no postgres binaries under /usr/lib/postgresql/*/bin');
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sf-pg-'));
  // postgres refuses to run as root: where we are root, run it as the postgres user (the process itself, so signals reach it).
  const user =
    process.getuid?.() === 0
      ? { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) }
      : {};
  if ('uid' in user) execFileSync('chown', ['-R', 'postgres', dir]);
  execFileSync(join(bin, 'initdb'), ['-D', join(dir, 'data'), '-A', 'trust', '-U', 'postgres', '--no-sync'], { stdio: 'pipe', ...user });
  if (alsoListen.length > 0) appendFileSync(join(dir, 'data', 'pg_hba.conf'), 'host all all 0.0.0.0/0 trust\n');
  const listen = ['127.0.0.1', ...alsoListen].join(',');
  const serverArgs = ['-D', join(dir, 'data'), '-p', String(port), '-k', dir, '-h', listen, '-F', '-c', 'max_connections=200'];
  const launch = () => spawn(join(bin, 'postgres'), serverArgs, { stdio: 'ignore', ...user });
  let child = launch();
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
  await until(() => postgresReady(admin), `postgres on port ${port}`);
  execFileSync('psql', [admin, '-c', 'create database test'], { stdio: 'pipe' });
  /** Stops the server as a crash would: every connection cut. */
  const crash = async () => {
    await kill(child, 'SIGKILL');
    // A killed postmaster leaves its backends behind for a moment: wait until it answers no more.
    await until(() => !postgresReady(admin), `postgres on port ${port} to go down`);
  };
  /**
   * Starts it again on the same data. A backend busy in a query outlives its
   * killed postmaster for a while, and a new postmaster refuses to start while
   * one is attached ("pre-existing shared memory block is still in use"):
   * launch again until one stays up, as a service manager would.
   */
  const start = async () => {
    child = launch();
    let launchedAt = Date.now();
    await until(
      () => {
        if ((child.exitCode !== null || child.signalCode !== null) && Date.now() - launchedAt > 250) {
          child = launch();
          launchedAt = Date.now();
        }
        return postgresReady(admin);
      },
      `postgres on port ${port} after restart`,
      90_000,
    );
  };
  return {
    url: `postgres://postgres@127.0.0.1:${port}/test`,
    port,
    source: 'local',
    crash,
    start,
    async restart() {
      await crash();
      await start();
    },
    async stop() {
      await kill(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function fromContainer(
  image: string,
  port: number,
  env: Record<string, string>,
  url: (host: string, port: number) => string,
): Promise<Server> {
  const { GenericContainer, Wait } = await import('testcontainers');
  let container = new GenericContainer(image).withExposedPorts(port);
  for (const [k, v] of Object.entries(env)) container = container.withEnvironment({ [k]: v });
  const started = await container.withWaitStrategy(Wait.forListeningPorts()).start();
  return { url: url(started.getHost(), started.getMappedPort(port)), source: 'container', stop: async () => void (await started.stop()) };
}

/**
 * Redis for the tests: REDIS_URL if set (it must answer), else a container
 * where a Docker engine answers, else a local redis-server.
 */
export async function redisForTests(): Promise<Server> {
  const given = process.env.REDIS_URL;
  if (given !== undefined && given !== '') {
    if (!(await redisPing(given))) throw new Error(`REDIS_URL=${given} does not answer PING`);
    return { url: given, source: 'env', stop: async () => {} };
  }
  if (dockerAnswers()) return fromContainer('redis:7', 6379, {}, (h, p) => `redis://${h}:${p}`);
  return startLocalRedis();
}

/** PostgreSQL for the tests, found the same way as Redis (DATABASE_URL, container, local binaries). */
export async function postgresForTests(): Promise<Server> {
  const given = process.env.DATABASE_URL;
  if (given !== undefined && given !== '') {
    if (!postgresReady(given)) throw new Error(`DATABASE_URL=${given} does not answer select 1`);
    return { url: given, source: 'env', stop: async () => {} };
  }
  if (dockerAnswers()) {
    return fromContainer(
      'postgres:16',
      5432,
      { POSTGRES_PASSWORD: 'test', POSTGRES_DB: 'test' },
      (h, p) => `postgres://postgres:test@${h}:${p}/test`,
    );
  }
  return startLocalPostgres();
}
