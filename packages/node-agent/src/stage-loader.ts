import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type AnyStageSpec, FabricError } from '@stagefabric/runtime';
import type { Topology, TopologyStage } from './topology.js';

export class StageLoadError extends FabricError {
  override readonly name = 'StageLoadError';

  constructor(message: string, options: { readonly cause?: unknown } = {}) {
    super('SF_BAD_STAGE_MODULE', message, options);
  }
}

function isStageSpec(value: unknown): value is AnyStageSpec {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { kind?: unknown; init?: unknown };
  return (v.kind === 'producer' || v.kind === 'producer_consumer' || v.kind === 'consumer') && typeof v.init === 'function';
}

/** Makes a built-in stage (`stagefabric:…`) for one instance, from its topology args. */
export type BuiltinStage = (args: unknown) => AnyStageSpec;

/** Imports a module named by a topology, relative to the topology file. */
export async function importModule(topology: Topology, what: string, module: string): Promise<Record<string, unknown>> {
  const path = resolve(dirname(topology.file), module);
  try {
    return (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (error) {
    throw new StageLoadError(`${what}: cannot import module ${module} (${path}): ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The stage spec a topology stage names: a built-in made for this instance,
 * or the export of its module.
 */
export async function loadStageSpec(
  topology: Topology,
  name: string,
  stage: TopologyStage,
  builtins: ReadonlyMap<string, BuiltinStage> = new Map(),
): Promise<AnyStageSpec> {
  if (stage.module.startsWith('stagefabric:')) {
    const make = builtins.get(stage.module);
    if (make === undefined) throw new StageLoadError(`stage ${name}: built-in ${stage.module} is not available here`);
    return make(stage.args);
  }
  const exportName = stage.export ?? name;
  const mod = await importModule(topology, `stage ${name}`, stage.module);
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
