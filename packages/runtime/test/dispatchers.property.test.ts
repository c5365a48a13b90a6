/**
 * Properties of the three dispatchers, through a real producer and consumers
 * whose demand the test drives: random dispatchers, buffer sizes and keeps,
 * partition hashes (some discarding) and caps, broadcast selectors, a
 * producer that answers demand at once or later, unsolicited events, and
 * random subscribes, asks and cancels. After each step the system must go
 * idle and:
 *  - no subscription has received more than its consumer asked for;
 *  - the producer was asked for no more than its subscribers asked, plus
 *    what the dispatcher handed back (events a broadcast selector filtered
 *    out, a cancelled partition's queue) and what a full buffer dropped (a
 *    subscriber still waits for those) -- so a producer answering at once
 *    never has events with nowhere to go;
 *  - every event produced was received, or waits in the producer's buffer or
 *    a partition queue, or was reported dropped, or was discarded by the hash;
 *  - no subscription receives an event twice or out of order;
 *  - once the producer has answered all it was asked and has events left, no
 *    subscriber of a demand dispatcher waits with demand open, and broadcast
 *    subscribers are not all left waiting (partitions may legitimately strand
 *    demand when the hash is uneven, as in GenStage).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { consumer, producer, StageSystem, type Subscription } from '../src/index.js';

type Kind = 'demand' | 'broadcast' | 'partition';

type Op =
  | { readonly t: 'subscribe'; readonly slot: number }
  | { readonly t: 'ask'; readonly slot: number; readonly n: number }
  | { readonly t: 'cancel'; readonly slot: number }
  | { readonly t: 'answer'; readonly n: number }
  | { readonly t: 'push'; readonly n: number };

const SLOTS = 3;

// Weighted so that the sequences that matter (ask, cancel, a late answer, a new subscriber asking) come up often.
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ t: fc.constant('subscribe' as const), slot: fc.nat(SLOTS - 1) }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('ask' as const), slot: fc.nat(SLOTS - 1), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('cancel' as const), slot: fc.nat(SLOTS - 1) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('answer' as const), n: fc.integer({ min: 1, max: 10 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('push' as const), n: fc.integer({ min: 1, max: 6 }) }) },
);

const scenarioArb = fc.record({
  kind: fc.constantFrom<Kind>('demand', 'broadcast', 'partition'),
  partitions: fc.integer({ min: 1, max: 3 }),
  /** event % length -> partition index (mod partitions), or undefined to discard. */
  hashTable: fc.array(fc.option(fc.nat(2), { nil: undefined }), { minLength: 1, maxLength: 7 }),
  /** Per slot: a broadcast selector as event % length -> keep?, or none. */
  selectors: fc.array(fc.option(fc.array(fc.boolean(), { minLength: 1, maxLength: 5 }), { nil: undefined }), {
    minLength: SLOTS,
    maxLength: SLOTS,
  }),
  bufferSize: fc.oneof(fc.constant(Number.POSITIVE_INFINITY), fc.integer({ min: 0, max: 8 })),
  keep: fc.constantFrom<'first' | 'last'>('first', 'last'),
  maxHeld: fc.oneof(fc.constant(Number.POSITIVE_INFINITY), fc.integer({ min: 0, max: 6 })),
  /** Answers demand inside handleDemand; otherwise only on an 'answer' step. */
  eager: fc.boolean(),
  ops: fc.array(opArb, { minLength: 1, maxLength: 40 }),
});

type Scenario = typeof scenarioArb extends fc.Arbitrary<infer S> ? S : never;

/** sys.idle(), but failing after a deadline: a system that does not go idle is a failure, not a hang. */
function idleWithin(sys: StageSystem, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the system did not go idle within ${ms} ms`)), ms);
  });
  return Promise.race([sys.idle(), deadline]).finally(() => clearTimeout(timer));
}

interface SubRecord {
  readonly sub: Subscription;
  readonly slot: number;
  readonly partition: number | undefined;
  asked: number;
  readonly received: number[];
  /** Events its selector filtered out (broadcast). */
  readonly rejected: number[];
}

/**
 * Events the producer has to give. Finite, because a broadcast subscriber whose
 * selector refuses everything keeps its demand open (GenStage's semantics):
 * over an endless source the producer would search for an event it takes forever.
 */
const SUPPLY = 200;

async function run(s: Scenario): Promise<void> {
  const sys = new StageSystem();
  const droppedFrom = new Map<number, number>(); // partition -> events its queue dropped
  sys.on('event', (e) => {
    if (e.type === 'buffer-overflow' && typeof e.partition === 'number') {
      droppedFrom.set(e.partition, (droppedFrom.get(e.partition) ?? 0) + e.dropped);
      // keep 'last' drops the oldest, which are the ones already handed back.
      if (s.keep === 'last') refunded.set(e.partition, Math.max(0, (refunded.get(e.partition) ?? 0) - e.dropped));
    }
  });
  let demanded = 0;
  let owed = 0;
  let produced = 0;
  let pushed = false;
  let hashDiscarded = 0;
  const hashedTo = new Map<number, number>();
  const hash = (e: number): number | undefined => {
    const v = s.hashTable[e % s.hashTable.length];
    if (v === undefined) {
      hashDiscarded++;
      return undefined;
    }
    const p = v % s.partitions;
    hashedTo.set(p, (hashedTo.get(p) ?? 0) + 1);
    return p;
  };
  const dispatcher =
    s.kind === 'partition'
      ? {
          type: 'partition' as const,
          partitions: s.partitions,
          hash: hash as (e: never) => number | undefined,
          maxHeldPerPartition: s.maxHeld,
        }
      : { type: s.kind };
  const p = await sys.start(
    producer<{ owed: number; next: number }, number>({
      init: () => ({ state: { owed: 0, next: 0 }, dispatcher, bufferSize: s.bufferSize, bufferKeep: s.keep }),
      handleDemand(n, state) {
        demanded += n;
        if (!s.eager) {
          state.owed += n;
          owed = state.owed;
          return undefined;
        }
        return { events: emit(state, n) };
      },
      handleCast(message, state) {
        const [kind, n] = message as ['answer' | 'push', number];
        const k = kind === 'answer' ? Math.min(n, state.owed) : n;
        if (kind === 'answer') state.owed -= k;
        owed = state.owed;
        return { events: emit(state, k) };
      },
    }),
    undefined,
  );
  function emit(state: { next: number }, wanted: number): number[] {
    const n = Math.max(0, Math.min(wanted, SUPPLY - state.next));
    const events = Array.from({ length: n }, (_, i) => state.next + i);
    state.next += n;
    produced += n;
    return events;
  }

  const records: SubRecord[] = [];
  const bySub = new Map<number, SubRecord>();
  const current = new Map<number, SubRecord>(); // slot -> live subscription
  /** What cancelled partitions handed back: their queued events, each once, which the producer is asked to replace. */
  let handedBack = 0;
  const receivedBy = new Map<number, number>(); // partition -> events its subscribers received
  const refunded = new Map<number, number>(); // partition -> events at the front of its queue already handed back
  // One consumer stage per subscription: a broadcast producer refuses a second subscription from the same stage.
  const sinkSpec = consumer<null, number>({
    init: () => ({ state: null }),
    handleSubscribe: () => ({ demand: 'manual' }),
    handleEvents(events, from) {
      const record = bySub.get(from.id);
      if (record === undefined) throw new Error(`events for unknown subscription ${from.id}`);
      record.received.push(...events);
      const partition = record.partition;
      if (partition !== undefined) {
        receivedBy.set(partition, (receivedBy.get(partition) ?? 0) + events.length);
        // A subscriber takes its partition's queue first, oldest (already handed back) first.
        refunded.set(partition, Math.max(0, (refunded.get(partition) ?? 0) - events.length));
      }
    },
  });

  for (const op of s.ops) {
    switch (op.t) {
      case 'subscribe': {
        if (current.has(op.slot)) break;
        const partition = s.kind === 'partition' ? op.slot % s.partitions : undefined;
        if (partition !== undefined && [...current.values()].some((r) => r.partition === partition)) break;
        const table = s.kind === 'broadcast' ? s.selectors[op.slot] : undefined;
        const rejected: number[] = [];
        const selector =
          table === undefined
            ? undefined
            : (e: number) => {
                const keep = table[e % table.length] as boolean;
                if (!keep) rejected.push(e);
                return keep;
              };
        const sink = await sys.start(sinkSpec, undefined);
        const sub = await sys.subscribe(sink, {
          to: p,
          cancel: 'temporary',
          ...(partition === undefined ? {} : { partition }),
          ...(selector === undefined ? {} : { selector: selector as (e: never) => boolean }),
        });
        const record: SubRecord = { sub, slot: op.slot, partition, asked: 0, received: [], rejected };
        records.push(record);
        bySub.set(sub.id, record);
        current.set(op.slot, record);
        break;
      }
      case 'ask': {
        const record = current.get(op.slot);
        if (record === undefined) break;
        record.asked += op.n;
        sys.ask(record.sub, op.n);
        break;
      }
      case 'cancel': {
        const record = current.get(op.slot);
        if (record === undefined) break;
        current.delete(op.slot);
        await idleWithin(sys, 2000);
        const partition = record.partition;
        if (partition !== undefined) {
          // What the partition holds beyond what its subscribers took, not handed back before.
          const queued = (hashedTo.get(partition) ?? 0) - (receivedBy.get(partition) ?? 0) - (droppedFrom.get(partition) ?? 0);
          handedBack += queued - (refunded.get(partition) ?? 0);
          refunded.set(partition, queued);
        }
        sys.cancel(record.sub, 'done');
        break;
      }
      case 'answer':
        sys.cast(p, ['answer', op.n]);
        break;
      case 'push':
        pushed = true;
        sys.cast(p, ['push', op.n]);
        break;
    }
    await idleWithin(sys, 2000);

    // No subscription receives more than its consumer asked for.
    for (const r of records) expect(r.received.length, `subscription ${r.sub.id}`).toBeLessThanOrEqual(r.asked);

    // The producer is asked for no more than its subscribers asked, plus what the dispatcher handed back
    // and what the buffer dropped.
    const stats = sys.stats(p);
    const asked = records.reduce((n, r) => n + r.asked, 0);
    const rejected = records.reduce((n, r) => n + r.rejected.length, 0);
    expect(demanded, 'demand reaching handleDemand').toBeLessThanOrEqual(asked + rejected + handedBack + stats.bufferDropped);
    if (s.kind === 'partition') {
      // A partition dispatch places events only up to the demand forwarded; the rest goes to the producer's buffer.
      const placed = [...hashedTo.values()].reduce((n, k) => n + k, 0);
      expect(placed, 'events placed in partitions').toBeLessThanOrEqual(asked + handedBack);
    }
    if (s.eager && !pushed && (s.kind !== 'partition' || s.maxHeld === Number.POSITIVE_INFINITY)) {
      expect(stats.bufferDropped, 'a producer answering what it is asked never has events with nowhere to go').toBe(0);
    }

    // Nothing is lost that was not reported dropped or discarded by the hash.
    if (s.kind === 'broadcast') {
      const offered = new Set<number>();
      for (const r of records) for (const e of [...r.received, ...r.rejected]) offered.add(e);
      expect(offered.size + stats.bufferLength + stats.bufferDropped).toBe(produced);
    } else {
      const received = records.reduce((n, r) => n + r.received.length, 0);
      expect(received + stats.bufferLength + stats.bufferDropped + hashDiscarded).toBe(produced);
    }

    // A consumer that asked is served while the producer has events to give.
    if (owed === 0 && produced < SUPPLY) {
      const open = [...current.values()].map((r) => r.asked - r.received.length);
      if (s.kind === 'demand')
        expect(
          open.every((n) => n === 0),
          `open demand ${open}`,
        ).toBe(true);
      if (s.kind === 'broadcast' && open.length > 0) expect(Math.min(...open), `open demand ${open}`).toBe(0);
    }

    // Each subscription gets each event once, in the order it was produced.
    for (const r of records) {
      for (let i = 1; i < r.received.length; i++) expect(r.received[i] as number).toBeGreaterThan(r.received[i - 1] as number);
    }
  }
  for (const stage of sys.list()) sys.kill(stage);
}

describe('dispatcher properties (fast-check)', () => {
  it('demand bounds, producer asks, conservation, order and idleness hold for every dispatcher', async () => {
    await fc.assert(fc.asyncProperty(scenarioArb, run), { numRuns: 1000 });
  });
});
