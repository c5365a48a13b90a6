import { parseArgs } from 'node:util';
import { discard, runChaos, summary } from './harness.js';

const USAGE = `Usage: npm run chaos -- [--seed S] [--minutes M] [--loopback] [--keep]

Runs the chocolates pipeline and a task drain over three hosts under seeded
random faults for M minutes (default 5), lets them recover, and checks the
invariants from the stores. Without --seed a random seed is drawn and printed.
Exit 0 when every invariant holds, 1 when one does not, 2 on bad arguments.`;

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    minutes: { type: 'string' },
    loopback: { type: 'boolean' },
    keep: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const minutes = Number(values.minutes ?? 5);
if (!Number.isInteger(seed) || seed < 0 || !(minutes > 0)) {
  console.error(`--seed must be a non-negative integer and --minutes a positive number\n\n${USAGE}`);
  process.exit(2);
}
console.log(`seed ${seed}${values.seed === undefined ? ' (random)' : ''}`);
// Ctrl-C ends the faults and cleans up (namespaces, servers, agents); a second one exits at once.
const interrupt = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupt.signal.aborted) process.exit(130);
    console.log('interrupted: cleaning up');
    interrupt.abort();
  });
}
const report = await runChaos({ seed, minutes, network: values.loopback ? 'loopback' : 'auto', signal: interrupt.signal }).catch(
  (error: Error) => {
    console.error(`chaos run (seed ${seed}) ended: ${error.message}`);
    process.exit(interrupt.signal.aborted ? 130 : 1);
  },
);
console.log(summary(report));
discard(report, values.keep === true);
process.exit(report.ok ? 0 : 1);
