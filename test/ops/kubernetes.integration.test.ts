import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseTopology } from '../../packages/node-agent/src/index.js';
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

function render(dir: string): Record<string, unknown>[] {
  const r = spawnSync('kubectl', ['kustomize', join(ROOT, dir)], { encoding: 'utf8' });
  if (r.error !== undefined) throw new Error('kubectl is missing: it renders the kustomizations (Debian package kubectl)');
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJS() as Record<string, unknown>);
}

describe('Kubernetes manifests', () => {
  for (const dir of ['deploy/kubernetes/base', 'deploy/kubernetes/dev']) {
    it(`${dir} renders with kustomize and every object validates against the Kubernetes schema`, () => {
      const objects = render(dir);
      expect(objects.length).toBeGreaterThanOrEqual(7);
      for (const o of objects) {
        const key = `${o.apiVersion}/${o.kind}`;
        const Model = MODELS[key];
        if (Model === undefined) throw new Error(`no schema for ${key} in this test: add it`);
        expect(() => new Model(o).validate(), `${key} ${(o.metadata as { name: string }).name}`).not.toThrow();
      }
      const agent = objects.find((o) => o.kind === 'StatefulSet') as {
        spec: {
          template: { spec: { terminationGracePeriodSeconds: number; containers: { readinessProbe: unknown; livenessProbe: unknown }[] } };
        };
      };
      expect(agent.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(30);
      expect(agent.spec.template.spec.containers[0]?.readinessProbe).toBeDefined();
      expect(agent.spec.template.spec.containers[0]?.livenessProbe).toBeDefined();
    });
  }

  it('the example Secret holds placeholders only, and the topology ConfigMap is a valid topology', () => {
    const objects = render('deploy/kubernetes/base');
    const secret = objects.find((o) => o.kind === 'Secret') as { stringData: Record<string, string> };
    for (const value of Object.values(secret.stringData)) {
      // A URL with a password in it (user:secret@host) would be a real credential.
      expect(value).not.toMatch(/:\/\/[^/@:]+:[^/@]+@/);
    }
    const config = objects.find((o) => o.kind === 'ConfigMap') as { data: Record<string, string> };
    const topology = parseTopology(config.data['topology.yaml'] as string, 'configmap:topology.yaml');
    expect(Object.keys(topology.stages)).toEqual(['maker', 'wrapper', 'boxer']);
  });
});
