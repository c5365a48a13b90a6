import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { handled, killAll, STAGES, testFabric, waitFor } from '../fabric/agent-process.js';
import { freePort } from '../support/servers.js';

const redisUrl = inject('redisUrl');

afterEach(async () => {
  await killAll();
});

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

describe('agent operator endpoints', () => {
  it('live agents serve metrics that promtool accepts, and answer /healthz and /readyz', async () => {
    const which = spawnSync('promtool', ['--version']);
    if (which.error !== undefined) throw new Error('promtool is missing: install Debian\'s "prometheus" package');
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100000000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 5 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 20 }] }
`);
    const ports = [await freePort(), await freePort()];
    f.agent(topology, 'a', { STAGEFABRIC_METRICS_PORT: String(ports[0]) });
    f.agent(topology, 'b', { STAGEFABRIC_METRICS_PORT: String(ports[1]) });
    await waitFor(() => handled(out).length > 100, 'events flowing');
    for (const port of ports as number[]) {
      await waitFor(async () => (await get(port, '/readyz').catch(() => ({ status: 0 }))).status === 200, `agent on ${port} ready`);
      expect((await get(port, '/healthz')).status).toBe(200);
      const metrics = await get(port, '/metrics');
      expect(metrics.status).toBe(200);
      const check = spawnSync('promtool', ['check', 'metrics'], { input: metrics.body, encoding: 'utf8' });
      expect(`${check.stdout}${check.stderr}`.trim()).toBe('');
      expect(check.status).toBe(0);
      for (const name of [
        'stagefabric_stage_events_in_total',
        'stagefabric_transport_messages_total',
        'stagefabric_inbox_entries',
        'stagefabric_node_up',
      ]) {
        if (name === 'stagefabric_stage_events_in_total' && port === ports[0]) continue; // the producer receives no events
        expect(metrics.body).toContain(name);
      }
    }
    expect((await get(ports[1] as number, '/metrics')).body).toMatch(
      /stagefabric_subscription_outstanding_demand_events\{producer="counter",consumer="recorder@b"|stagefabric_stage_handle_duration_seconds_bucket\{/,
    );
  });
});
