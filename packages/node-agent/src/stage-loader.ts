import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { AnyStageSpec } from '@stagefabric/runtime';
import type { Topology, TopologyStage } from './topology.js';

export class StageLoadError extends Error {
  override readonly name = 'StageLoadError';
  readonly code = 'SF_BAD_STAGE_MODULE';
}

function isStageSpec(value: unknown): value is AnyStageSpec {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { kind?: unknown; init?: unknown };
  return (v.kind === 'producer' || v.kind === 'producer_consumer' || v.kind === 'consumer') && typeof v.init === 'function';
}

/** Imports the module a topology stage names and returns the stage spec it exports. */
export async function loadStageSpec(topology: Topology, name: string, stage: TopologyStage): Promise<AnyStageSpec> {
  const path = resolve(dirname(topology.file), stage.module);
  const exportName = stage.export ?? name;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (error) {
    throw new StageLoadError(`stage ${name}: cannot import module ${stage.module} (${path}): ${(error as Error).message}`, {
      cause: error,
    });
  }
  const spec = mod[exportName];
  if (spec === undefined) {
    const exported = Object.keys(mod).join(', ') || 'nothing';
    throw new StageLoadError(`stage ${name}: module ${stage.module} has no export "${exportName}" (it exports ${exported})`);
  }
  if (!isStageSpec(spec)) {
    throw new StageLoadError(
      `stage ${name}: export "${exportName}" of ${stage.module} is not a stage spec; define it with producer(), producerConsumer() or consumer()`,
    );
  }
  return spec;
}
