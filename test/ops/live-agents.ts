import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { type AgentProcess, ROOT, testFabric, waitFor } from '../fabric/agent-process.js';
import { freePort } from '../support/servers.js';

const TWO_HOSTS = join(ROOT, 'examples/chocolates/two-hosts.yaml');
const CHOCOLATES = join(ROOT, 'examples/chocolates/stages.js');

/** More chocolates than a test lasts, so both agents are still running when they are scraped. */
export const ENDLESS = 1_000_000_000;

interface StageEntry {
  module: string;
  args?: Record<string, unknown>;
  [key: string]: unknown;
}

/**
 * The example two-host chocolates topology (maker in the kitchen, wrapper and
 * boxer in the packing room), with a total no test outlives and the module
 * path made absolute so the file can live in a temp folder. `extra` adds
 * top-level keys and stages (tasks, say) beside the chocolates.
 */
export function chocolatesTopology(extra: { top?: Record<string, unknown>; stages?: Record<string, unknown> } = {}): string {
  const doc = parse(readFileSync(TWO_HOSTS, 'utf8')) as { stages: Record<string, StageEntry> };
  for (const stage of Object.values(doc.stages)) stage.module = CHOCOLATES;
  const maker = doc.stages.maker;
  if (maker === undefined) throw new Error(`${TWO_HOSTS} has no maker stage`);
  maker.args = { ...maker.args, total: ENDLESS };
  return stringify({ ...extra.top, stages: { ...doc.stages, ...extra.stages } });
}

export interface LiveAgents {
  readonly kitchen: AgentProcess;
  readonly packing: AgentProcess;
  /** Metrics ports: kitchen's, then packing's. */
  readonly ports: readonly [number, number];
}

/** Starts `kitchen` and `packing` on `topology`, each serving /metrics on a free port of its own. */
export async function startTwoAgents(
  redisUrl: string,
  topologyYaml: string,
  env: Record<string, string> = {},
  args: { readonly kitchen?: readonly string[]; readonly packing?: readonly string[] } = {},
): Promise<LiveAgents> {
  const fabric = await testFabric(redisUrl);
  const topology = await fabric.topology(topologyYaml);
  const ports = [await freePort(), await freePort()] as const;
  const kitchen = fabric.agent(topology, 'kitchen', { ...env, STAGEFABRIC_METRICS_PORT: String(ports[0]) }, args.kitchen);
  const packing = fabric.agent(topology, 'packing', { ...env, STAGEFABRIC_METRICS_PORT: String(ports[1]) }, args.packing);
  return { kitchen, packing, ports };
}

export async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

/** Waits until the agent on `port` answers `/readyz` with 200; an agent that exits meanwhile fails at once, with its log. */
export async function waitReady(agent: AgentProcess, port: number, timeoutMs = 30_000): Promise<void> {
  let exited: number | null | undefined;
  void agent.exited.then((code) => {
    exited = code;
  });
  await waitFor(
    async () => {
      if (exited !== undefined)
        throw new Error(`the agent on port ${port} exited (${exited}) before it was ready:\n${agent.stderr.slice(-2000)}`);
      return (await httpGet(port, '/readyz').catch(() => ({ status: 0 }))).status === 200;
    },
    `the agent on port ${port} to answer /readyz with 200`,
    timeoutMs,
  );
}

/**
 * A binary the ops tests need (promtool, prometheus). Missing, it fails the
 * test with how to get it: nothing here is skipped, on CI or off it.
 */
export function requireBinary(name: string, pkg: string): void {
  const r = spawnSync(name, ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined) throw new Error(`${name} is missing: install Debian's "${pkg}" package (apt-get install -y ${pkg})`);
}
