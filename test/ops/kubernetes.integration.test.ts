import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTopology } from '@stagefabric/node-agent';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { ROOT } from '../fabric/agent-process.js';

type Validating = new (data: object) => { validate(): void };
const MODELS: Record<string, Validating> = {
  'apps/v1/StatefulSet': StatefulSet,
  'apps/v1/Deployment': Deployment,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'v1/Secret': Secret,
  'v1/Service': Service,
};

const BASE = 'deploy/kubernetes/base';
const DEV = 'deploy/kubernetes/dev';
const NAMESPACE = 'stagefabric';
const METRICS_PORT = 9464;

interface Meta {
  name: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: Meta;
  [key: string]: unknown;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string; optional?: boolean } };
}
interface Probe {
  httpGet?: { path: string; port: number | string };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string }[];
}
interface PodTemplate {
  metadata: Meta;
  spec: {
    terminationGracePeriodSeconds?: number;
    securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
    containers: Container[];
    volumes?: { name: string; configMap?: { name: string } }[];
  };
}
interface Workload extends K8sObject {
  spec: { replicas?: number; serviceName?: string; selector: { matchLabels: Record<string, string> }; template: PodTemplate };
}
interface ServiceObject extends K8sObject {
  spec: { type?: string; clusterIP?: string; externalName?: string; selector?: Record<string, string>; ports?: { port: number }[] };
}
interface SecretObject extends K8sObject {
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

/** Renders a kustomization with kustomize itself (kubectl's built-in), as `kubectl apply -k` would. */
function render(dir: string): K8sObject[] {
  const r = spawnSync('kubectl', ['kustomize', join(ROOT, dir)], { encoding: 'utf8' });
  if (r.error !== undefined) throw new Error(`kubectl is missing: it renders the kustomizations offline (${r.error.message})`);
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as K8sObject);
}

function one<T extends K8sObject>(objects: K8sObject[], kind: string, name?: string): T {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name === undefined ? '' : ` ${name}`}, found ${found.length}`);
  return found[0] as T;
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

/**
 * A value a Secret in the repository may hold: a Redis or PostgreSQL URL
 * with a user at most, no password (`user:password@`), no query (where
 * `?password=` or `?sslkey=` would go), to a host of the cluster's own.
 */
function assertPlaceholder(key: string, value: string): void {
  const url = new URL(value);
  expect(['redis:', 'rediss:', 'postgres:', 'postgresql:'], `${key}: scheme`).toContain(url.protocol);
  expect(url.password, `${key} carries a password`).toBe('');
  expect(url.search, `${key} carries query parameters`).toBe('');
  expect(['redis', 'postgres'], `${key}: a placeholder host (the Service names)`).toContain(url.hostname);
}

function assertPlaceholderSecret(secret: SecretObject, where: string): void {
  // `data` is base64: nothing there could be read at a glance in review, so the examples keep to stringData.
  expect(secret.data, `${where}: data (base64) in an example Secret`).toBeUndefined();
  const values = Object.entries(secret.stringData ?? {});
  expect(values.map(([k]) => k).sort()).toEqual(['database-url', 'redis-url']);
  for (const [key, value] of values) assertPlaceholder(`${where} ${key}`, value);
}

describe('Kubernetes manifests', () => {
  it('the validator rejects a broken object (so a pass below means something)', () => {
    const broken = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'x' }, spec: { ports: [{ port: 'metrics' }] } };
    const Model = MODELS['v1/Service'] as Validating;
    expect(() => new Model(broken).validate()).toThrow(/must be integer/);
  });

  for (const dir of [BASE, DEV]) {
    it(`${dir} renders with kustomize and every object validates against the Kubernetes schema`, () => {
      const objects = render(dir);
      expect(objects.length).toBeGreaterThanOrEqual(7);
      for (const o of objects) {
        const key = `${o.apiVersion}/${o.kind}`;
        const Model = MODELS[key];
        if (Model === undefined) throw new Error(`no schema for ${key} in this test: add its kubernetes-models class`);
        expect(() => new Model(o).validate(), `${key} ${o.metadata.name}`).not.toThrow();
        // Every object lands in the one namespace (an overlay's own objects too), beside the Services it names.
        if (o.kind !== 'Namespace') expect(o.metadata.namespace, `${key} ${o.metadata.name}: namespace`).toBe(NAMESPACE);
      }
    });

    it(`${dir}: the agent StatefulSet is wired to its pod name, probes, topology, Secret, Service and budget`, () => {
      const objects = render(dir);
      const agent = one<Workload>(objects, 'StatefulSet');
      const pod = agent.spec.template;
      expect(matches(agent.spec.selector.matchLabels, pod.metadata.labels), 'selector matches the pod labels').toBe(true);
      expect(pod.spec.securityContext?.runAsNonRoot).toBe(true);
      // The drain on SIGTERM: tasks get 30 s to finish, then acknowledgements and cancels.
      expect(pod.spec.terminationGracePeriodSeconds).toBe(60);
      const container = pod.spec.containers[0] as Container;
      // Listening on every interface of the pod: the default, 127.0.0.1, is out of Prometheus' and the kubelet's reach.
      expect(container.args).toEqual([
        'up',
        '/etc/stagefabric/topology.yaml',
        '--metrics-port',
        String(METRICS_PORT),
        '--metrics-host',
        '0.0.0.0',
      ]);

      // The node name is the pod's name, which a StatefulSet keeps across restarts of the same pod.
      const node = container.env?.find((e) => e.name === 'STAGEFABRIC_NODE');
      expect(node?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');

      const metricsPort = container.ports?.find((p) => p.containerPort === METRICS_PORT);
      expect(metricsPort).toBeDefined();
      for (const [probe, path] of [
        [container.readinessProbe, '/readyz'],
        [container.livenessProbe, '/healthz'],
      ] as const) {
        expect(probe?.httpGet?.path).toBe(path);
        expect([METRICS_PORT, metricsPort?.name]).toContain(probe?.httpGet?.port);
      }
      expect(pod.metadata.annotations?.['prometheus.io/scrape']).toBe('true');
      expect(pod.metadata.annotations?.['prometheus.io/port']).toBe(String(METRICS_PORT));

      // The topology ConfigMap (its generated, hashed name) is mounted where the args read it.
      const mount = container.volumeMounts?.find((m) => m.mountPath === '/etc/stagefabric');
      const volume = pod.spec.volumes?.find((v) => v.name === mount?.name);
      const config = one<K8sObject & { data: Record<string, string> }>(objects, 'ConfigMap');
      expect(volume?.configMap?.name).toBe(config.metadata.name);
      expect(config.data['topology.yaml']).toBeDefined();

      // REDIS_URL and DATABASE_URL come from the Secret, by keys the example (and the dev Secret) define.
      const example = parse(readFileSync(join(ROOT, BASE, 'secret.example.yaml'), 'utf8')) as SecretObject;
      for (const variable of ['REDIS_URL', 'DATABASE_URL']) {
        const ref = container.env?.find((e) => e.name === variable)?.valueFrom?.secretKeyRef;
        expect(ref?.name, variable).toBe(example.metadata.name);
        expect(Object.keys(example.stringData ?? {}), variable).toContain(ref?.key);
      }
      // The shared secret, from the same Secret when it has one: optional, so a Secret without it still starts the agents.
      const secretRef = container.env?.find((e) => e.name === 'STAGEFABRIC_SECRET')?.valueFrom?.secretKeyRef;
      expect(secretRef).toEqual({ name: example.metadata.name, key: 'fabric-secret', optional: true });

      const headless = one<ServiceObject>(objects, 'Service', agent.spec.serviceName);
      expect(headless.spec.clusterIP).toBe('None');
      expect(matches(headless.spec.selector ?? {}, pod.metadata.labels)).toBe(true);
      expect(headless.metadata.annotations?.['prometheus.io/scrape']).toBe('true');
      expect(headless.spec.ports?.map((p) => p.port)).toContain(METRICS_PORT);

      const budget = one<K8sObject & { spec: { selector: { matchLabels: Record<string, string> } } }>(objects, 'PodDisruptionBudget');
      expect(matches(budget.spec.selector.matchLabels, pod.metadata.labels)).toBe(true);
    });
  }

  it('the base names Redis and PostgreSQL as external services, and carries no Secret for `apply -k` to overwrite', () => {
    const objects = render(BASE);
    for (const name of ['redis', 'postgres']) {
      const service = one<ServiceObject>(objects, 'Service', name);
      expect(service.spec.type).toBe('ExternalName');
      expect(service.spec.externalName).toMatch(/\./);
    }
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
  });

  it('the dev overlay runs one Redis and one PostgreSQL behind those names, and its Secret points at them', () => {
    const objects = render(DEV);
    for (const name of ['redis', 'postgres']) {
      const service = one<ServiceObject>(objects, 'Service', name);
      expect(service.spec.type ?? 'ClusterIP').toBe('ClusterIP');
      const deployment = one<Workload>(objects, 'Deployment', name);
      expect(deployment.spec.replicas).toBe(1);
      expect(matches(service.spec.selector ?? {}, deployment.spec.template.metadata.labels), `Service ${name} selects its pod`).toBe(true);
    }
    assertPlaceholderSecret(one<SecretObject>(objects, 'Secret', 'stagefabric-connections'), `${DEV} Secret`);
  });

  it('the example Secret is a valid Secret holding placeholders only', () => {
    const example = parse(readFileSync(join(ROOT, BASE, 'secret.example.yaml'), 'utf8')) as SecretObject;
    expect(() => new Secret(example).validate()).not.toThrow();
    assertPlaceholderSecret(example, `${BASE}/secret.example.yaml`);
    // The check itself catches a password.
    expect(() => assertPlaceholder('x', 'postgres://stagefabric:hunter2@postgres:5432/stagefabric')).toThrow();
  });

  it('the topology ConfigMap is the chocolates pipeline over the StatefulSet pods, with stage modules the image ships', async () => {
    const objects = render(BASE);
    const yaml = one<K8sObject & { data: Record<string, string> }>(objects, 'ConfigMap').data['topology.yaml'] as string;
    const topology = parseTopology(yaml, 'configmap:topology.yaml');
    expect(Object.keys(topology.stages)).toEqual(['maker', 'wrapper', 'boxer']);

    // Every stage is placed on a pod the StatefulSet makes (name-0, name-1, ...), and both pods host one.
    const agent = one<Workload>(objects, 'StatefulSet');
    const pods = Array.from({ length: agent.spec.replicas ?? 1 }, (_, i) => `${agent.metadata.name}-${i}`);
    const raw = parse(yaml) as { stages: Record<string, { module: string; nodes?: string[] }> };
    const placed = new Set(Object.values(raw.stages).flatMap((s) => s.nodes ?? pods));
    expect([...placed].sort()).toEqual(pods);

    // The image is this repository at /app: the modules exist here once built, and `stagectl validate` accepts the topology.
    const dir = await mkdtemp(join(tmpdir(), 'sf-k8s-'));
    try {
      for (const stage of Object.values(raw.stages)) {
        expect(stage.module.startsWith('/app/'), `${stage.module} is in the image`).toBe(true);
        expect(existsSync(join(ROOT, stage.module.slice('/app/'.length))), `${stage.module} (built by tsc -b)`).toBe(true);
      }
      const local = join(dir, 'topology.yaml');
      await writeFile(local, yaml.replaceAll('/app/', `${ROOT}/`));
      const r = spawnSync(process.execPath, [join(ROOT, 'packages/cli/dist/main.js'), 'validate', local], { encoding: 'utf8' });
      expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the image runs what the StatefulSet expects: tini as PID 1, a non-root user, the agent on the metrics port', () => {
    const dockerfile = readFileSync(join(ROOT, 'deploy/image/Dockerfile'), 'utf8');
    const instruction = (name: string) => [...dockerfile.matchAll(new RegExp(`^${name}\\s+(.+)$`, 'gm'))].map((m) => m[1] as string);
    const final = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    expect(final).toMatch(/^FROM node:20[-.\w]*slim\b/m);
    expect(final).toMatch(/apt-get install[^\n]*\btini\b/);
    expect(JSON.parse(instruction('ENTRYPOINT').at(-1) ?? '[]')).toEqual(['/usr/bin/tini', '--', 'node', 'packages/cli/dist/main.js']);
    const agent = one<Workload>(render(BASE), 'StatefulSet');
    expect(JSON.parse(instruction('CMD').at(-1) ?? '[]')).toEqual(agent.spec.template.spec.containers[0]?.args);
    const user = instruction('USER').at(-1) ?? 'root';
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(user.split(':')[0]).toBe(String(agent.spec.template.spec.securityContext?.runAsUser));
    expect(instruction('EXPOSE')).toContain(String(METRICS_PORT));
    expect(dockerfile).toMatch(/--omit=dev/);
    expect(existsSync(join(ROOT, 'packages/cli/dist/main.js')), 'the entry point tsc -b builds').toBe(true);
  });
});
