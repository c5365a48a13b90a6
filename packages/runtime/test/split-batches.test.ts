import { describe, expect, it } from 'vitest';
import { consumer, type StageMessage, type StagePeer, StageSystem } from '../src/index.js';
import { askAfterBatch, batchLimit, pendingAfterBatch, splitBatches } from '../src/split-batches.js';

/** [maxDemand, minDemand, outstanding demand, events arriving] → batches as [size, ask after], outstanding demand after. */
type Case = readonly [string, readonly [number, number, number, number], readonly (readonly [number, number])[], number];

// From GenStage's split_batches (gen_stage.ex) and the demand tests of gen_stage_test.exs.
const cases: readonly Case[] = [
  ['one batch that leaves demand above minDemand asks nothing', [10, 5, 10, 3], [[3, 0]], 7],
  ['a batch that brings demand down to minDemand asks it back up to maxDemand', [10, 5, 7, 2], [[2, 5]], 10],
  [
    'maxDemand events arrive as batches of maxDemand − minDemand, each asking for its size',
    [10, 5, 10, 10],
    [
      [5, 5],
      [5, 5],
    ],
    10,
  ],
  [
    'the last batch holds what is left',
    [10, 5, 10, 7],
    [
      [5, 5],
      [2, 0],
    ],
    8,
  ],
  [
    'defaults, maxDemand 1000 and minDemand 500',
    [1000, 500, 1000, 1000],
    [
      [500, 500],
      [500, 500],
    ],
    1000,
  ],
  [
    '20% min demand: batches of 80, the second asks nothing',
    [100, 20, 100, 100],
    [
      [80, 80],
      [20, 0],
    ],
    80,
  ],
  ['20% min demand, the next delivery: demand falls to 0 and is asked back in full', [100, 20, 80, 80], [[80, 100]], 100],
  [
    '80% min demand: batches of 20, each asking for its size',
    [100, 80, 100, 100],
    [
      [20, 20],
      [20, 20],
      [20, 20],
      [20, 20],
      [20, 20],
    ],
    100,
  ],
  ['minDemand 0 asks again only once all of maxDemand arrived', [3, 0, 3, 2], [[2, 0]], 1],
  ['minDemand 0, the rest arrives: maxDemand is asked again', [3, 0, 1, 1], [[1, 3]], 3],
  ['maxDemand 1 and minDemand 0: one event at a time', [1, 0, 1, 1], [[1, 1]], 1],
  ['events beyond outstanding demand lower it to 0, not below', [10, 5, 2, 4], [[4, 10]], 10],
  ['no events, no batches', [10, 5, 7, 0], [], 7],
];

describe('splitBatches (GenStage split_batches)', () => {
  it.each(cases)('%s', (_name, [maxDemand, minDemand, pending, count], batches, after) => {
    const plan = splitBatches(count, pending, { maxDemand, minDemand });
    expect(plan.batches.map((b) => [b.size, b.askAfter])).toEqual(batches);
    expect(plan.pending).toBe(after);
  });

  it('a batch holds at most maxDemand − minDemand events', () => {
    expect(batchLimit({ maxDemand: 1000, minDemand: 500 })).toBe(500);
    expect(batchLimit({ maxDemand: 10, minDemand: 9 })).toBe(1);
    expect(batchLimit({ maxDemand: 3, minDemand: 0 })).toBe(3);
  });

  it('after each batch, outstanding demand is what was left plus the ask, above minDemand and at most maxDemand', () => {
    const broken: string[] = [];
    for (const [maxDemand, minDemand] of [
      [10, 5],
      [100, 20],
      [7, 0],
      [1, 0],
    ] as const) {
      const bounds = { maxDemand, minDemand };
      for (let pending = 0; pending <= maxDemand; pending++) {
        for (let size = 0; size <= pending; size++) {
          const ask = askAfterBatch(pending, size, bounds);
          const next = pendingAfterBatch(pending, size, bounds);
          if (next !== pending - size + ask || next > maxDemand || next <= minDemand) {
            broken.push(`max ${maxDemand} min ${minDemand} pending ${pending} batch ${size}: ask ${ask}, then ${next}`);
          }
        }
      }
    }
    expect(broken).toEqual([]);
  });
});

/** Stands in for a producer: records what the consumer asks and hands it events. */
class ProducerStandIn implements StagePeer {
  readonly id = 999_999;
  readonly name = 'producer';
  readonly label = 'producer';
  readonly alive = true;
  readonly asks: number[] = [];
  private consumer: StagePeer | undefined;
  private subscriptionId = 0;

  deliver(message: StageMessage): void {
    if (message.t === 'subscribe') {
      this.consumer = message.consumer;
      this.subscriptionId = message.subscription.id;
    } else if (message.t === 'ask') this.asks.push(message.count);
  }

  send(count: number): void {
    this.consumer?.deliver({ t: 'events', id: this.subscriptionId, events: Array.from({ length: count }, (_, i) => i) });
  }
}

describe('a consumer stage follows splitBatches', () => {
  it.each([
    [10, 5, 10],
    [10, 5, 7],
    [100, 20, 100],
    [100, 80, 100],
    [3, 0, 2],
    [1000, 500, 1000],
  ] as const)(
    'maxDemand %i, minDemand %i, %i events: the batches handleEvents gets and the asks after them',
    async (maxDemand, minDemand, count) => {
      const producer = new ProducerStandIn();
      const sys = new StageSystem({ resolve: (name) => (name === 'producer' ? producer : undefined) });
      const sizes: number[] = [];
      const stage = await sys.start(
        consumer<null, number>({
          init: () => ({ state: null, subscribeTo: [{ to: 'producer', maxDemand, minDemand }] }),
          handleEvents: (events) => {
            sizes.push(events.length);
          },
        }),
        undefined,
      );
      await sys.idle();
      expect(producer.asks).toEqual([maxDemand]);
      producer.send(count);
      await sys.idle();
      const plan = splitBatches(count, maxDemand, { maxDemand, minDemand });
      expect(sizes).toEqual(plan.batches.map((b) => b.size));
      expect(producer.asks.slice(1)).toEqual(plan.batches.map((b) => b.askAfter).filter((n) => n > 0));
      expect(sys.stats(stage).upstream.map((u) => u.pending)).toEqual([plan.pending]);
    },
  );
});
