import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { type AgentProcess, handled, killAll, ROOT, STAGES, testFabric, waitFor } from '../fabric/agent-process.js';
import { freePort } from '../support/servers.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const redisUrl = inject('redisUrl');
const databaseUrl = inject('databaseUrl');
const HANDLERS = join(ROOT, 'test/tasks/handlers.mjs');
/** The grace period these agents are given for a stop. */
const STOP_TIMEOUT_MS = 3000;

const proxies: TcpProxy[] = [];
afterEach(async () => {
  await killAll();
  for (const p of proxies.splice(0)) await p.close();
});

async function proxyTo(url: string): Promise<TcpProxy> {
  const u = new URL(url);
  const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port) });
  proxies.push(proxy);
  return proxy;
}

/** GET within one second, or a failure saying the endpoint did not answer. */
async function getWithinASecond(port: number, path: string): Promise<{ status: number; body: string; ms: number }> {
  const started = Date.now();
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(1000) }).catch((error: Error) => {
    throw new Error(`${path} did not answer within a second: ${error.message}`);
  });
  const body = await res.text();
  return { status: res.status, body, ms: Date.now() - started };
}

/** SIGTERM, and how long the agent took to exit (it must exit within its grace period plus a little). */
async function stopTime(agent: AgentProcess): Promise<number> {
  const started = Date.now();
  agent.child.kill('SIGTERM');
  await waitFor(
    () => agent.child.exitCode !== null || agent.child.signalCode !== null,
    `the agent to exit after SIGTERM (log: ${agent.stderr.slice(-300)})`,
    STOP_TIMEOUT_MS + 4000,
  );
  return Date.now() - started;
}

describe('agents stay answerable while their servers are not', () => {
  for (const outage of ['frozen', 'stopped'] as const) {
    it(`Redis ${outage}: /healthz, /readyz (503 with the reason) and /metrics answer within a second; SIGTERM stops within the grace period`, async () => {
      const proxy = await proxyTo(redisUrl);
      const f = await testFabric(proxy.via(redisUrl));
      const out = f.file('out.jsonl');
      const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100000000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
      const ports = [await freePort(), await freePort()];
      const env = (port: number) => ({ STAGEFABRIC_METRICS_PORT: String(port), STAGEFABRIC_STOP_TIMEOUT_MS: String(STOP_TIMEOUT_MS) });
      const agents = [f.agent(topology, 'a', env(ports[0] as number)), f.agent(topology, 'b', env(ports[1] as number))];
      await waitFor(() => handled(out).length >= 50, 'the stream to start');
      if (outage === 'frozen') proxy.blackhole();
      else await proxy.close();
      for (const port of ports as number[]) {
        expect((await getWithinASecond(port, '/healthz')).status).toBe(200);
        // Readiness reads this node's heartbeat; a frozen Redis gets a bounded wait, then the answer.
        await waitFor(async () => (await getWithinASecond(port, '/readyz')).status === 503, 'readyz to answer 503');
        expect((await getWithinASecond(port, '/readyz')).body).toMatch(/^not ready: redis/);
        const metrics = await getWithinASecond(port, '/metrics');
        expect(metrics.status).toBe(200);
        expect(metrics.body).toContain('stagefabric_node_up');
        expect(metrics.body).toMatch(/stagefabric_metrics_source_up\{source="redis"[^}]*\} 0/);
      }
      for (const agent of agents) expect(await stopTime(agent)).toBeLessThan(STOP_TIMEOUT_MS + 2000);
    });
  }

  it('while the agent boots against a frozen Redis, /healthz answers, /readyz and /metrics say 503 starting; SIGTERM ends it', async () => {
    const proxy = await proxyTo(redisUrl);
    proxy.blackhole();
    const f = await testFabric(proxy.via(redisUrl));
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 10 }, nodes: [a] }
`);
    const port = await freePort();
    const agent = f.agent(topology, 'a', { STAGEFABRIC_METRICS_PORT: String(port), STAGEFABRIC_STOP_TIMEOUT_MS: String(STOP_TIMEOUT_MS) });
    await waitFor(() => agent.logs('serving /metrics, /healthz and /readyz').length === 1, 'the endpoints to listen');
    expect((await getWithinASecond(port, '/healthz')).status).toBe(200);
    expect(await getWithinASecond(port, '/readyz')).toMatchObject({ status: 503, body: 'not ready: starting\n' });
    expect((await getWithinASecond(port, '/metrics')).status).toBe(503);
    expect(await stopTime(agent)).toBeLessThan(STOP_TIMEOUT_MS + 2000);
  });

  /**
   * A task agent (producer and runner) whose PostgreSQL is reached through a proxy, with its metrics served;
   * `check` runs once its metrics answer. Its schema is dropped afterwards.
   */
  async function withTaskAgentThroughProxy(check: (agent: AgentProcess, port: number, proxy: TcpProxy) => Promise<void>) {
    const proxy = await proxyTo(databaseUrl);
    const schema = `sf_o${randomUUID().slice(0, 8)}`;
    const store = new PostgresTaskStore({ url: databaseUrl, schema });
    await store.migrate();
    try {
      const f = await testFabric('redis://unused');
      const topology = await f.topology(`
tasks: { handlers: ${HANDLERS}, schema: ${schema} }
stages:
  tasks: { module: stagefabric:task-producer, args: { pollIntervalMs: 200 } }
  runner: { module: stagefabric:task-runner, subscribe: [{ to: tasks, maxDemand: 10 }] }
`);
      const port = await freePort();
      const agent = f.agent(topology, 'w1', {
        DATABASE_URL: proxy.via(databaseUrl),
        REDIS_URL: '',
        TASK_RUNS_TABLE: `${schema}.none`,
        STAGEFABRIC_METRICS_PORT: String(port),
        STAGEFABRIC_STOP_TIMEOUT_MS: String(STOP_TIMEOUT_MS),
      });
      await waitFor(
        async () => (await getWithinASecond(port, '/metrics').catch(() => ({ body: '' }))).body.includes('stagefabric_tasks'),
        'metrics',
      );
      await check(agent, port, proxy);
    } finally {
      await store.close();
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(`DROP SCHEMA ${schema} CASCADE`).finally(() => admin.end());
    }
  }

  it('PostgreSQL frozen: /metrics answers within a second with the task store reported down; SIGTERM stops within the grace period', async () => {
    await withTaskAgentThroughProxy(async (agent, port, proxy) => {
      proxy.blackhole();
      expect((await getWithinASecond(port, '/healthz')).status).toBe(200);
      await waitFor(
        async () => /stagefabric_metrics_source_up\{source="task_store"[^}]*\} 0/.test((await getWithinASecond(port, '/metrics')).body),
        'the metrics to report the task store down',
      );
      expect((await getWithinASecond(port, '/readyz')).status).toBeLessThan(600);
      // Handing back held tasks waits on the frozen server: the grace period ends the stop, and the agent says so.
      expect(await stopTime(agent)).toBeLessThan(STOP_TIMEOUT_MS + 2000);
      expect(agent.child.exitCode).toBe(1);
      expect(agent.logs('stop did not finish within its grace period: dropping the connections and what is left')).toHaveLength(1);
    });
  });

  it('PostgreSQL cut off: each failed task store call is logged and counted by who made it, and the agent keeps answering', async () => {
    await withTaskAgentThroughProxy(async (agent, port, proxy) => {
      const errors = async (source: string) =>
        Number(
          new RegExp(`stagefabric_task_store_errors_total\\{source="${source}"[^}]*\\} (\\d+)`).exec(
            (await getWithinASecond(port, '/metrics')).body,
          )?.[1] ?? 0,
        );
      expect(await errors('producer')).toBe(0);
      // Every connection through the proxy is dropped, and new ones are refused.
      await proxy.close();
      await waitFor(async () => (await errors('producer')) >= 3, 'three failed producer polls to be counted');
      const logged = () => agent.logs('task store error; retrying').filter((l) => l.source === 'producer');
      await waitFor(() => logged().length >= 3, 'the failures to be logged');
      expect(String((logged()[0]?.err as { message?: string })?.message)).toMatch(/ECONNREFUSED|Connection terminated|connect/i);
      expect(agent.child.exitCode).toBeNull();
      expect((await getWithinASecond(port, '/healthz')).status).toBe(200);
    });
  });
});
