// The task handler of the split placement in the tasks benchmark, imported by
// the runner agents: a no-op that tells the benchmark it ran. Runs of one
// event-loop turn are told together in one PUBLISH (`node:count`), so telling
// costs the drain little and a single task is told at once.
import { Redis } from 'ioredis';

const redis = new Redis(process.env.BENCH_REDIS_URL);
const channel = process.env.BENCH_CHANNEL;
const node = process.env.STAGEFABRIC_NODE;
let ran = 0;
let telling = false;

function tell() {
  telling = false;
  const n = ran;
  ran = 0;
  void redis.publish(channel, `${node}:${n}`);
}

export function noop() {
  ran++;
  if (!telling) {
    telling = true;
    setImmediate(tell);
  }
}
