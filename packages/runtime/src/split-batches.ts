/*
 * GenStage's split_batches: how a consumer with automatic demand cuts the
 * events that arrive on a subscription into batches for handleEvents, and
 * how much it asks for after each batch.
 *
 * A batch holds at most maxDemand − minDemand events. Each batch lowers the
 * subscription's outstanding demand by its size; once that has fallen to
 * minDemand or below, the consumer asks, after handling the batch, for what
 * brings it back to maxDemand. Events beyond the outstanding demand (a
 * producer that broke the protocol) lower it to 0, not below.
 *
 * The consumer side applies this one batch at a time (askAfterBatch and
 * pendingAfterBatch), as its demand can change between batches (its code may
 * ask on the subscription while a batch is handled); splitBatches is the same
 * rule over a whole delivery.
 */

/** The demand options of one subscription, resolved. */
export interface DemandBounds {
  readonly minDemand: number;
  readonly maxDemand: number;
}

/** One batch of a delivery: its size, and what the consumer asks for once it is handled (0: nothing). */
export interface Batch {
  readonly size: number;
  readonly askAfter: number;
}

/** A delivery cut into batches, and the outstanding demand once every batch is handled and every ask sent. */
export interface BatchPlan {
  readonly batches: readonly Batch[];
  readonly pending: number;
}

/** The most events one handleEvents receives on a subscription: maxDemand − minDemand. */
export function batchLimit(bounds: DemandBounds): number {
  return bounds.maxDemand - bounds.minDemand;
}

/** What to ask for once a batch of `size` events, received with `pending` outstanding, is handled. */
export function askAfterBatch(pending: number, size: number, bounds: DemandBounds): number {
  const left = Math.max(0, pending - size);
  return left <= bounds.minDemand ? bounds.maxDemand - left : 0;
}

/** Outstanding demand after a batch of `size` events, received with `pending` outstanding, counting the ask that follows it. */
export function pendingAfterBatch(pending: number, size: number, bounds: DemandBounds): number {
  const left = Math.max(0, pending - size);
  return left <= bounds.minDemand ? bounds.maxDemand : left;
}

/** Cuts a delivery of `count` events, received with `pending` outstanding, into batches (none for no events). */
export function splitBatches(count: number, pending: number, bounds: DemandBounds): BatchPlan {
  const limit = batchLimit(bounds);
  const batches: Batch[] = [];
  for (let offset = 0; offset < count; offset += limit) {
    const size = Math.min(limit, count - offset);
    batches.push({ size, askAfter: askAfterBatch(pending, size, bounds) });
    pending = pendingAfterBatch(pending, size, bounds);
  }
  return { batches, pending };
}
