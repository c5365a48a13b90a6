import type { Redis } from 'ioredis';
import type { ChaosAgent } from './agents.js';
import type { Network } from './network.js';
import type { Random } from './random.js';
import type { Workload } from './workload.js';

export const FAULT_KINDS = ['kill-agent', 'restart-redis', 'restart-postgres', 'partition', 'pause', 'garbage', 'burst'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultTargets {
  readonly agents: readonly ChaosAgent[];
  readonly network: Network;
  readonly redis: { restart(signal?: NodeJS.Signals): Promise<void> };
  readonly postgres: { restart(): Promise<void> };
  /** The harness's own connection, for garbage. */
  readonly redisClient: Redis;
  readonly namespace: string;
  readonly workload: Workload;
  /** A host is dead to the others after this long without a heartbeat. */
  readonly heartbeatTimeoutMs: number;
  readonly leaseMs: number;
  readonly burstSize: number;
}

export interface FaultRecord {
  readonly kind: FaultKind;
  readonly target: string;
  readonly at: number;
  readonly ms: number;
  readonly detail?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What a fault costs in time, drawn up front, so the seed alone fixes the sequence of faults. */
export interface PlannedFault {
  readonly kind: FaultKind;
  readonly agent: number;
  readonly holdMs: number;
  readonly count: number;
}

/** Draws the next fault. Kinds the network cannot do (partition on loopback) are drawn and then skipped, so seeds replay alike. */
export function planFault(random: Random, t: FaultTargets): PlannedFault {
  const kind = random.weighted<FaultKind>({
    'kill-agent': 3,
    'restart-redis': 1,
    'restart-postgres': 1,
    partition: 2,
    pause: 2,
    garbage: 1,
    // A burst takes the drain about a minute on two cores: rarer than the others, so work does not pile up past the run.
    burst: 0.5,
  });
  const agent = random.int(0, t.agents.length - 1);
  let holdMs = 0;
  if (kind === 'kill-agent') holdMs = random.int(200, 4000);
  else if (kind === 'partition') holdMs = t.heartbeatTimeoutMs + random.int(1000, 8000);
  else if (kind === 'pause') holdMs = t.leaseMs + random.int(1000, 5000);
  const count = kind === 'garbage' ? random.int(1, 20) : kind === 'burst' ? t.burstSize : 0;
  return { kind, agent, holdMs, count };
}

/** Injects one fault and waits until it is over (the agent started again, the link up, the server back). */
export async function inject(plan: PlannedFault, t: FaultTargets): Promise<FaultRecord | undefined> {
  const started = Date.now();
  const agent = t.agents[plan.agent] as ChaosAgent;
  const done = (target: string, detail?: string): FaultRecord => ({
    kind: plan.kind,
    target,
    at: started,
    ms: Date.now() - started,
    ...(detail === undefined ? {} : { detail }),
  });
  switch (plan.kind) {
    case 'kill-agent':
      await agent.kill();
      await sleep(plan.holdMs);
      agent.start();
      return done(agent.host.name);
    case 'restart-redis':
      await t.redis.restart('SIGKILL');
      return done('redis');
    case 'restart-postgres':
      await t.postgres.restart();
      return done('postgres');
    case 'partition':
      if (t.network.mode !== 'netns') return undefined;
      t.network.cut(agent.host);
      try {
        await sleep(plan.holdMs);
      } finally {
        t.network.heal(agent.host);
      }
      return done(agent.host.name);
    case 'pause':
      agent.pause();
      await sleep(plan.holdMs);
      agent.resume();
      return done(agent.host.name);
    case 'garbage': {
      const inboxes = await scanInboxes(t.redisClient, t.namespace);
      for (const inbox of inboxes) await writeGarbage(t.redisClient, inbox, plan.count);
      return done(`${inboxes.length} inboxes`, `${plan.count} entries each`);
    }
    case 'burst':
      await t.workload.enqueue(plan.count);
      return done('tasks', `${plan.count} tasks`);
  }
}

async function scanInboxes(redis: Redis, namespace: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `sf:${namespace}:inbox:*`, 'COUNT', 100);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  return keys;
}

/** Entries no node wrote: random bytes where the message belongs, unknown fields, a valid-looking but wrong message. */
async function writeGarbage(redis: Redis, inbox: string, count: number): Promise<void> {
  const pipeline = redis.pipeline();
  for (let i = 0; i < count; i++) {
    const bytes = Buffer.from(Array.from({ length: 1 + (i % 64) }, (_, j) => (i * 31 + j * 17) % 256));
    if (i % 3 === 0) pipeline.xadd(inbox, '*', 'm', bytes);
    else if (i % 3 === 1) pipeline.xadd(inbox, '*', 'junk', bytes, 'more', 'x');
    else pipeline.xadd(inbox, '*', 'm', Buffer.from('{"t":"events","key":"nobody","epoch":-1,"seq":0,"events":[1]}'));
  }
  await pipeline.exec();
}
