import { badOption, isPositiveInteger } from '../options.js';
import { BroadcastDispatcher } from './broadcast-dispatcher.js';
import { DemandDispatcher } from './demand-dispatcher.js';
import type { Dispatcher, SendEvents } from './dispatcher.js';
import { PartitionDispatcher } from './partition-dispatcher.js';

/** Builds the dispatcher a producer's init asked for; the default is the demand dispatcher. */
export function createDispatcher(where: string, spec: unknown, bufferSize: number, send: SendEvents<unknown>): Dispatcher<unknown> {
  if (spec === undefined) return new DemandDispatcher(send);
  const type = typeof spec === 'object' && spec !== null ? (spec as { type?: unknown }).type : spec;
  switch (type) {
    case 'demand':
      return new DemandDispatcher(send);
    case 'broadcast':
      return new BroadcastDispatcher(send);
    case 'partition': {
      const s = spec as { partitions?: unknown; hash?: unknown; maxHeldPerPartition?: unknown };
      const names = isPositiveInteger(s.partitions) ? Array.from({ length: s.partitions }, (_, i) => i) : s.partitions;
      if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === 'string' || typeof n === 'number')) {
        throw badOption(where, 'dispatcher.partitions', s.partitions, 'must be a positive integer or a non-empty list of names');
      }
      if (new Set(names).size !== names.length) throw badOption(where, 'dispatcher.partitions', s.partitions, 'names must be unique');
      if (s.hash !== undefined && typeof s.hash !== 'function') throw badOption(where, 'dispatcher.hash', s.hash, 'must be a function');
      const maxHeld = s.maxHeldPerPartition ?? (Number.isFinite(bufferSize) ? bufferSize : 10_000);
      if (!isPositiveInteger(maxHeld)) throw badOption(where, 'dispatcher.maxHeldPerPartition', maxHeld, 'must be a positive integer');
      return new PartitionDispatcher(
        names as (string | number)[],
        s.hash as ((e: unknown) => string | number | undefined) | undefined,
        maxHeld,
        send,
      );
    }
    default:
      throw badOption(where, 'dispatcher', spec, "must be { type: 'demand' }, { type: 'broadcast' } or { type: 'partition', partitions }");
  }
}
