import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { METRIC_NAMES } from '@stagefabric/node-agent';
import { PostgresTaskStore } from '@stagefabric/tasks/postgres';
import pg from 'pg';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { killAll, ROOT, waitFor } from '../fabric/agent-process.js';
import { freePort } from '../support/servers.js';
import { chocolatesTopology, requireBinary, startTwoAgents, waitReady } from './live-agents.js';

const redisUrl = inject('redisUrl');
const databaseUrl = inject('databaseUrl');
const DASHBOARD = join(ROOT, 'deploy/grafana/stagefabric-dashboard.json');
const PROMETHEUS_YML = join(ROOT, 'deploy/prometheus/prometheus.yml');

interface Target {
  readonly refId: string;
  readonly expr: string;
}
interface Panel {
  readonly title: string;
  readonly type: string;
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
}
interface ScrapeConfig {
  job_name: string;
  kubernetes_sd_configs?: unknown;
  static_configs?: { targets: string[]; labels?: Record<string, string> }[];
  relabel_configs?: unknown[];
  scrape_interval?: string;
}
interface PrometheusConfig {
  global?: Record<string, unknown>;
  scrape_configs: ScrapeConfig[];
}

/** Every panel with queries, rows' nested panels included. */
function panelsOf(dashboard: { panels: readonly Panel[] }): Panel[] {
  return dashboard.panels.flatMap((p) => (p.type === 'row' ? [...(p.panels ?? [])] : [p])).filter((p) => (p.targets ?? []).length > 0);
}

/**
 * Grafana's interval variables as a concrete window. 30 s covers many 1 s
 * scrapes, so rates and quantiles have samples as soon as a few exist.
 */
function concrete(expr: string): string {
  return expr.replace(/\$\{?(__rate_interval|__interval|__range)\}?/g, '30s');
}

/** The shipped prometheus.yml, its Kubernetes job's pod discovery replaced by static targets (Debian's Prometheus has no Kubernetes SD). */
function shippedConfigWithStaticPods(pods: readonly { target: string; labels: Record<string, string> }[]): PrometheusConfig {
  const config = parse(readFileSync(PROMETHEUS_YML, 'utf8')) as PrometheusConfig;
  const kube = config.scrape_configs.find((c) => c.kubernetes_sd_configs !== undefined);
  if (kube === undefined) throw new Error(`${PROMETHEUS_YML} has no kubernetes_sd_configs job`);
  delete kube.kubernetes_sd_configs;
  kube.static_configs = pods.map((p) => ({ targets: [p.target], labels: p.labels }));
  return config;
}

/** Pod discovery's labels for a pod with these annotations. */
function podLabels(pod: string, scrape: string, port: number): Record<string, string> {
  return {
    __meta_kubernetes_namespace: 'stagefabric',
    __meta_kubernetes_pod_name: pod,
    __meta_kubernetes_pod_annotation_prometheus_io_scrape: scrape,
    __meta_kubernetes_pod_annotation_prometheus_io_port: String(port),
    __meta_kubernetes_pod_annotation_prometheus_io_path: '/metrics',
  };
}

class Prometheus {
  private readonly child: ChildProcess;
  private output = '';
  readonly exited: Promise<number | null>;

  constructor(
    readonly dir: string,
    readonly port: number,
  ) {
    this.child = spawn(
      'prometheus',
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child.stdout?.on('data', (d: Buffer) => this.keep(d));
    this.child.stderr?.on('data', (d: Buffer) => this.keep(d));
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code) => resolve(code));
      this.child.on('error', () => resolve(null));
    });
  }

  private keep(d: Buffer): void {
    this.output = (this.output + d.toString()).slice(-4000);
  }

  get log(): string {
    return this.output;
  }

  async api<T>(path: string): Promise<T> {
    const res = await fetch(`http://127.0.0.1:${this.port}/api/v1/${path}`);
    const body = (await res.json()) as { status: string; data: T; error?: string };
    if (body.status !== 'success') throw new Error(`Prometheus ${path}: ${body.error}`);
    return body.data;
  }

  async query(expr: string): Promise<{ metric: Record<string, string> }[]> {
    return (await this.api<{ result: { metric: Record<string, string> }[] }>(`query?query=${encodeURIComponent(expr)}`)).result;
  }

  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    await this.exited;
  }
}

let prometheus: Prometheus | undefined;
let dir: string | undefined;
afterEach(async () => {
  await prometheus?.stop();
  prometheus = undefined;
  await killAll();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('the shipped Prometheus configuration', () => {
  it('passes promtool check config (its pod discovery swapped for static targets: Debian builds Prometheus without Kubernetes SD)', async () => {
    requireBinary('promtool', 'prometheus');
    dir = await mkdtemp(join(tmpdir(), 'sf-promcfg-'));
    const file = join(dir, 'prometheus.yml');
    await writeFile(file, stringify(shippedConfigWithStaticPods([{ target: '10.0.0.1', labels: podLabels('p', 'true', 9464) }])));
    const check = spawnSync('promtool', ['check', 'config', file], { encoding: 'utf8' });
    expect(check.status, `${check.stdout}${check.stderr}`).toBe(0);
  });
});

describe('the Grafana dashboard on live data', () => {
  it('every panel query returns series from a real Prometheus scraping two agents (the chocolates and a task runner)', async () => {
    requireBinary('prometheus', 'prometheus');
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] };
    const panels = panelsOf(dashboard);
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    // What the dashboard must show, by metric name (each defined in metrics.ts).
    for (const name of [
      METRIC_NAMES.nodeUp,
      METRIC_NAMES.stageEventsIn,
      METRIC_NAMES.stageEventsOut,
      `${METRIC_NAMES.stageHandleDuration}_bucket`,
      METRIC_NAMES.subscriptionDemand,
      METRIC_NAMES.stageBufferEvents,
      METRIC_NAMES.stageBufferCapacity,
      METRIC_NAMES.inboxEntries,
      METRIC_NAMES.inboxPending,
      METRIC_NAMES.transportRedeliveries,
      METRIC_NAMES.transportDeadLetters,
      METRIC_NAMES.transportMessages,
      METRIC_NAMES.fabricRefusedAsks,
      METRIC_NAMES.fabricAuthFailures,
      METRIC_NAMES.fabricHeartbeatsRefused,
      METRIC_NAMES.transportSendRetries,
      METRIC_NAMES.transportSendFailures,
      METRIC_NAMES.metricsSourceUp,
      'stagefabric_nodejs_eventloop_lag',
    ]) {
      expect(exprs, `a dashboard panel queries ${name}`).toContain(name);
    }

    dir = await mkdtemp(join(tmpdir(), 'sf-prom-'));
    const handlers = join(dir, 'handlers.mjs');
    await writeFile(handlers, 'export const sleep = (args) => new Promise((resolve) => setTimeout(resolve, args.ms));\n');
    // The task panels need tasks: a producer and a runner in the kitchen, on a schema of this test's own.
    const schema = `sf_d${randomUUID().slice(0, 8)}`;
    const store = new PostgresTaskStore({ url: databaseUrl, schema });
    let passed = false;
    try {
      await store.migrate();
      const topology = chocolatesTopology({
        top: { tasks: { handlers, schema } },
        stages: {
          tasks: { module: 'stagefabric:task-producer', args: { pollIntervalMs: 200 }, nodes: ['kitchen'] },
          runner: { module: 'stagefabric:task-runner', nodes: ['kitchen'], subscribe: [{ to: 'tasks', maxDemand: 20 }] },
        },
      });
      await store.enqueue(
        Array.from({ length: 20_000 }, (_, i) => ({ name: 'sleep', args: { ms: 2 + (i % 5) }, options: { maxAttempts: 1 } })),
      );
      const { kitchen, packing, ports } = await startTwoAgents(redisUrl, topology, { DATABASE_URL: databaseUrl });
      await waitReady(kitchen, ports[0]);
      await waitReady(packing, ports[1]);

      // Prometheus scrapes them through the shipped config's pod relabelling, every second; a pod not annotated is not scraped.
      const config = shippedConfigWithStaticPods([
        { target: '127.0.0.1', labels: podLabels('stagefabric-agent-0', 'true', ports[0]) },
        { target: '127.0.0.1', labels: podLabels('stagefabric-agent-1', 'true', ports[1]) },
        { target: '127.0.0.1', labels: podLabels('not-annotated', 'false', ports[0]) },
      ]);
      config.global = { ...config.global, scrape_interval: '1s', evaluation_interval: '1s' };
      // The example static job names hosts that do not exist here.
      config.scrape_configs = config.scrape_configs.filter((c) => c.static_configs !== undefined && c.relabel_configs !== undefined);
      await writeFile(join(dir, 'prometheus.yml'), stringify(config));
      prometheus = new Prometheus(dir, await freePort());
      const prom = prometheus;
      let exited: number | null | undefined;
      void prom.exited.then((code) => {
        exited = code;
      });
      await waitFor(
        async () => {
          if (exited !== undefined) throw new Error(`prometheus exited (${exited}):\n${prom.log}`);
          const up = await prom.query('up == 1').catch(() => []);
          return up.length === 2;
        },
        'Prometheus to scrape both agents',
        30_000,
      );
      const pods = (await prom.query('up')).map((s) => s.metric.pod).sort();
      expect(pods).toEqual(['stagefabric-agent-0', 'stagefabric-agent-1']);

      const empty: string[] = [];
      for (const panel of panels) {
        for (const target of panel.targets ?? []) {
          const expr = concrete(target.expr);
          expect(expr, `panel "${panel.title}" ${target.refId}: a Grafana variable left unreplaced`).not.toMatch(/\$/);
          // Rates and quantiles need two scrapes or more: poll with a deadline; a panel still empty after it fails, named.
          let error = '';
          const ok = await waitFor(
            async () => {
              try {
                return (await prom.query(expr)).length > 0;
              } catch (e) {
                error = (e as Error).message;
                return false;
              }
            },
            `panel "${panel.title}"`,
            20_000,
          ).then(
            () => true,
            () => false,
          );
          if (!ok)
            empty.push(`panel "${panel.title}" ${target.refId}: ${target.expr}${error === '' ? ' returned no series' : ` (${error})`}`);
        }
      }
      expect(empty).toEqual([]);
      passed = true;
    } finally {
      await store.close();
      // Dropped when the test passed; kept for a look when it failed.
      if (passed) {
        const admin = new pg.Client({ connectionString: databaseUrl });
        await admin.connect();
        await admin.query(`DROP SCHEMA ${schema} CASCADE`);
        await admin.end();
      }
    }
  }, 240_000);
});
