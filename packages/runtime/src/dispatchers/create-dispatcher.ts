import type { BufferKeep } from '../buffer.js';
import { badOption, isPositiveInteger } from '../options.js';
import { BroadcastDispatcher } from './broadcast-dispatcher.js';
import { DemandDispatcher } from './demand-dispatcher.js';
import type { Dispatcher, DispatcherHost } from './dispatcher.js';
import { PartitionDispatcher } from './partition-dispatcher.js';

/** Partition queues are capped at the producer's bufferSize, or this when that is Infinity. */
const DEFAULT_MAX_HELD_PER_PARTITION = 10_000;

/** Builds the dispatcher a producer's init asked for; the default is the demand dispatcher. */
export function createDispatcher(
  where: string,
  spec: unknown,
  bufferSize: number,
  bufferKeep: BufferKeep,
  host: DispatcherHost<unknown>,
): Dispatcher<unknown> {
  if (spec === undefined) return new DemandDispatcher(host);
  const type = typeof spec === 'object' && spec !== null ? (spec as { type?: unknown }).type : spec;
  switch (type) {
    case 'demand':
      return new DemandDispatcher(host);
    case 'broadcast':
      return new BroadcastDispatcher(host);
    case 'partition': {
      const s = spec as { partitions?: unknown; hash?: unknown; maxHeldPerPartition?: unknown };
      const names = isPositiveInteger(s.partitions) ? Array.from({ length: s.partitions }, (_, i) => i) : s.partitions;
      if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === 'string' || typeof n === 'number')) {
        throw badOption(where, 'dispatcher.partitions', s.partitions, 'must be a positive integer or a non-empty list of names');
      }
      if (new Set(names).size !== names.length) throw badOption(where, 'dispatcher.partitions', s.partitions, 'names must be unique');
      if (s.hash !== undefined && typeof s.hash !== 'function') throw badOption(where, 'dispatcher.hash', s.hash, 'must be a function');
      const maxHeld = s.maxHeldPerPartition ?? (Number.isFinite(bufferSize) ? bufferSize : DEFAULT_MAX_HELD_PER_PARTITION);
      if (maxHeld !== Number.POSITIVE_INFINITY && !(typeof maxHeld === 'number' && Number.isInteger(maxHeld) && maxHeld >= 0)) {
        throw badOption(where, 'dispatcher.maxHeldPerPartition', maxHeld, 'must be a non-negative integer or Infinity');
      }
      return new PartitionDispatcher(
        names as (string | number)[],
        s.hash as ((e: unknown) => string | number | undefined) | undefined,
        maxHeld as number,
        bufferKeep,
        host,
      );
    }
    default:
      throw badOption(where, 'dispatcher', spec, "must be { type: 'demand' }, { type: 'broadcast' } or { type: 'partition', partitions }");
  }
}
