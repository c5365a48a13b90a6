import { describe, expect, inject, it } from 'vitest';
import { fuzzSummary, runWireFuzz } from '../chaos/wire-fuzz.js';

const redisUrl = inject('redisUrl');
// A short run on every change, its seed printed to replay it (longer runs: npm run fuzz, reported in test/chaos/RESULTS.md).
const SEED = process.env.FUZZ_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.FUZZ_SEED);
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 75);

describe('wire fuzz: random and mutated entries in every inbox of a running three-node pipeline', () => {
  it(
    `seed ${SEED}: every node stays up and bounded, the stream is exactly as without the noise, every bad entry is dead-lettered`,
    async () => {
      console.log(`wire fuzz seed ${SEED}; replay: npm run fuzz -- --seed ${SEED} --minutes ${SECONDS / 60}`);
      const report = await runWireFuzz({ seed: SEED, durationMs: SECONDS * 1000, redisUrl, log: (line) => console.log(line) });
      console.log(fuzzSummary(report));
      expect(report.incidents, `seed ${SEED}`).toEqual([]);
      expect(report.missing, `seed ${SEED}: bad entries not dead-lettered`).toEqual([]);
      expect(report.exact).toBe(true);
      // Every case was exercised.
      for (const [c, n] of Object.entries(report.written)) expect(n, `${c} entries written`).toBeGreaterThan(0);
    },
    (SECONDS + 240) * 1000,
  );
});
