import { describe, expect, it } from 'vitest';
import { discard, runChaos, summary } from './harness.js';

// A short chaos run on every change: a fixed seed, and a random one (printed, to replay it).
const FIXED_SEED = 20_261_124;
const RANDOM_SEED = Math.floor(Math.random() * 2 ** 31);
const MINUTES = Number(process.env.CHAOS_MINUTES ?? 1.5);

describe('chaos: three hosts under seeded faults', () => {
  for (const [label, seed] of [
    ['fixed', FIXED_SEED],
    ['random', RANDOM_SEED],
  ] as const) {
    it(
      `seed ${seed} (${label}): every invariant holds`,
      async () => {
        console.log(`chaos seed ${seed} (${label}); replay: npm run chaos -- --seed ${seed} --minutes ${MINUTES}`);
        const report = await runChaos({ seed, minutes: MINUTES, log: (line) => console.log(line) });
        console.log(summary(report));
        discard(report, false);
        const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.invariant}: ${v.detail}`);
        expect(failed, `seed ${seed}; records kept in ${report.dir}`).toEqual([]);
      },
      (MINUTES * 60 + 420) * 1000,
    );
  }
});
