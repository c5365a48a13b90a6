import { spawnSync } from 'node:child_process';
import { networkInterfaces } from 'node:os';
import { METRIC_NAMES } from '@stagefabric/node-agent';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { killAll, waitFor } from '../fabric/agent-process.js';
import { chocolatesTopology, httpGet, requireBinary, startTwoAgents, waitReady } from './live-agents.js';

const redisUrl = inject('redisUrl');

afterEach(async () => {
  await killAll();
});

/** The metric families an exposition declares (`# TYPE name type`). */
function families(exposition: string): string[] {
  return [...exposition.matchAll(/^# TYPE (\S+) \S+$/gm)].map((m) => m[1] as string);
}

describe('agent operator endpoints', () => {
  it('two live agents (the two-host chocolates) serve metrics promtool accepts, and answer /healthz and /readyz', async () => {
    requireBinary('promtool', 'prometheus');
    const { kitchen, packing, ports } = await startTwoAgents(redisUrl, chocolatesTopology());
    const agents = [
      { name: 'kitchen', agent: kitchen, port: ports[0] },
      { name: 'packing', agent: packing, port: ports[1] },
    ];
    for (const { agent, port } of agents) await waitReady(agent, port);
    // Wait for chocolates to cross the wire, so the transport's series have samples, not just declarations.
    await waitFor(
      async () => /stagefabric_stage_events_in_total\{stage="boxer"[^}]*\} [1-9]/.test((await httpGet(ports[1], '/metrics')).body),
      'chocolates boxed in the packing room',
    );

    const named = new Set<string>(Object.values(METRIC_NAMES));
    for (const { name, port } of agents) {
      expect((await httpGet(port, '/healthz')).status, `${name} /healthz`).toBe(200);
      expect((await httpGet(port, '/readyz')).status, `${name} /readyz`).toBe(200);
      const metrics = await httpGet(port, '/metrics');
      expect(metrics.status, `${name} /metrics`).toBe(200);

      const check = spawnSync('promtool', ['check', 'metrics'], { input: metrics.body, encoding: 'utf8' });
      expect(`${check.stdout}${check.stderr}`.trim(), `promtool check metrics on ${name}`).toBe('');
      expect(check.status, `promtool check metrics exit status on ${name}`).toBe(0);

      // Every family is either named in metrics.ts or one of prom-client's default process metrics.
      const strays = families(metrics.body).filter((f) => !named.has(f) && !/^stagefabric_(nodejs|process)_/.test(f));
      expect(strays, `${name}: metric families not named in METRIC_NAMES`).toEqual([]);
      // Two hosts over Redis: the transport and the inboxes are there, on both.
      for (const family of [
        METRIC_NAMES.nodeUp,
        METRIC_NAMES.transportMessages,
        METRIC_NAMES.inboxEntries,
        METRIC_NAMES.inboxPending,
        METRIC_NAMES.subscriptionDemand,
      ]) {
        expect(metrics.body, `${name} exports samples of ${family}`).toMatch(new RegExp(`^${family}\\{[^}]*node="${name}"`, 'm'));
      }
    }
    const packingMetrics = (await httpGet(ports[1], '/metrics')).body;
    expect(packingMetrics).toMatch(/^stagefabric_subscription_outstanding_demand_events\{producer="wrapper",consumer="boxer(@packing)?"/m);
    expect(packingMetrics).toMatch(/^stagefabric_stage_handle_duration_seconds_bucket\{[^}]*stage="boxer"/m);
  });

  it('the endpoints listen on 127.0.0.1 unless --metrics-host says otherwise', async () => {
    const { kitchen, packing, ports } = await startTwoAgents(
      redisUrl,
      chocolatesTopology(),
      {},
      { packing: ['--metrics-host', '0.0.0.0'] },
    );
    for (const [agent, port] of [
      [kitchen, ports[0]],
      [packing, ports[1]],
    ] as const)
      await waitReady(agent, port);
    const served = (agent: typeof kitchen) => agent.logs('serving /metrics, /healthz and /readyz')[0]?.address as { address: string };
    expect(served(kitchen).address).toBe('127.0.0.1');
    expect(served(packing).address).toBe('0.0.0.0');
    // From another address of this host, only the agent told to listen there answers.
    const lan = Object.values(networkInterfaces())
      .flat()
      .find((i) => i !== undefined && i.family === 'IPv4' && !i.internal)?.address;
    if (lan !== undefined) {
      await expect(fetch(`http://${lan}:${ports[0]}/healthz`)).rejects.toThrow();
      expect((await fetch(`http://${lan}:${ports[1]}/healthz`)).status).toBe(200);
    }
  });
});
