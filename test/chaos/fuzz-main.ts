import { parseArgs } from 'node:util';
import { fuzzSummary, runWireFuzz } from './wire-fuzz.js';

const USAGE = `Usage: npm run fuzz -- [--seed S] [--minutes M] [--rate N]

Runs a three-node pipeline over REDIS_URL (default redis://127.0.0.1:6379)
while seeded random and mutated entries (N a second, default 150) are written
into every inbox for M minutes (default 5); then checks that every node stayed
up and within its memory bound, that the consumer handled exactly what it
would have without the noise, and that every bad entry is in the dead-letter
stream with a reason. Without --seed a random seed is drawn and printed.
Exit 0 when every check holds, 1 when one does not, 2 on bad arguments.`;

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    minutes: { type: 'string' },
    rate: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const minutes = Number(values.minutes ?? 5);
const rate = Number(values.rate ?? 150);
if (!Number.isInteger(seed) || seed < 0 || !(minutes > 0) || !(rate > 0)) {
  console.error(`--seed must be a non-negative integer, --minutes and --rate positive numbers\n\n${USAGE}`);
  process.exit(2);
}
const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
console.log(`seed ${seed}${values.seed === undefined ? ' (random)' : ''}; replay: npm run fuzz -- --seed ${seed} --minutes ${minutes}`);
const interrupt = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupt.signal.aborted) process.exit(130);
    console.log('interrupted: stopping the fuzz and checking what was written');
    interrupt.abort();
  });
}
const report = await runWireFuzz({
  seed,
  durationMs: minutes * 60_000,
  redisUrl,
  entriesPerSecond: rate,
  signal: interrupt.signal,
  log: (line) => console.log(line),
}).catch((error: Error) => {
  console.error(`wire fuzz (seed ${seed}) ended: ${error.message}`);
  process.exit(1);
});
console.log(fuzzSummary(report));
process.exit(report.ok ? 0 : 1);
