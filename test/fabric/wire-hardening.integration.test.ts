import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { Packr } from 'msgpackr';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { startLocalRedis } from '../support/servers.js';
import { type AgentProcess, handled, killAll, readRecords, STAGES, testFabric, waitFor } from './agent-process.js';

const redisUrl = inject('redisUrl');
const redis = new Redis(redisUrl);
const packr = new Packr({ useRecords: false });
const FAST_BEATS = { STAGEFABRIC_HEARTBEAT_MS: '200' };
const DEAD_LETTER_LOG = 'inbox entry moved to the dead-letter stream';

afterEach(async () => {
  await killAll();
});
afterAll(async () => {
  await redis.quit();
});

/** Writes a message into an inbox as a foreign writer would: encoded, unsigned. */
async function forge(namespace: string, inbox: string, message: unknown, client: Redis = redis): Promise<string> {
  return (await client.xadd(`sf:${namespace}:inbox:${inbox}`, '*', 'm', packr.pack(message))) as string;
}

interface DeadLetterRecord {
  readonly inbox: string;
  readonly entry: string;
  readonly reason: string;
  readonly kind: string;
}

async function deadLetters(namespace: string, client: Redis = redis): Promise<DeadLetterRecord[]> {
  const entries = await client.xrange(`sf:${namespace}:dead`, '-', '+');
  return entries.map(([, fields]) => {
    const record: Record<string, string> = {};
    for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i] as string] = fields[i + 1] as string;
    return record as unknown as DeadLetterRecord;
  });
}

/** The key and epoch of the consumer's current remote subscription, from its node's demand audit. */
function currentSubscription(auditFile: string): { key: string; epoch: number } {
  const lines = readFileSync(auditFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { side: string; key: string; epoch: number });
  const last = lines.filter((l) => l.side === 'consumer').at(-1);
  if (last === undefined) throw new Error('no consumer subscription in the audit yet');
  return { key: last.key, epoch: last.epoch };
}

function rssBytes(agent: AgentProcess): number {
  const status = readFileSync(`/proc/${agent.child.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

describe('nothing on the wire takes a node down', () => {
  it('an ask beyond the subscription’s maxDemand is dead-lettered and never reaches the producer', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const audit = f.file('audit.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 1000000000000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const producer = f.agent(topology, 'a', FAST_BEATS);
    const consumer = f.agent(topology, 'b', { ...FAST_BEATS, STAGEFABRIC_DEMAND_AUDIT: audit });
    await waitFor(() => handled(out).length >= 50, 'the stream to start');
    await waitFor(() => {
      try {
        return currentSubscription(audit).epoch > 0;
      } catch {
        return false;
      }
    }, 'the audit to name the subscription');
    const { key, epoch } = currentSubscription(audit);
    for (let i = 0; i < 4; i++) await forge(f.namespace, 'counter@a', { t: 'ask', key, epoch, hwm: Number.MAX_SAFE_INTEGER - i });
    await waitFor(async () => (await deadLetters(f.namespace)).length === 4, 'four dead letters');
    const letters = await deadLetters(f.namespace);
    for (const l of letters) {
      expect(l.inbox).toBe('counter@a');
      expect(l.kind).toBe('refused');
      expect(l.reason).toMatch(/beyond the subscription's maxDemand of 10/);
    }
    // The log line reaches this process through a pipe, after the dead letter is in Redis.
    await waitFor(() => producer.logs(DEAD_LETTER_LOG).length >= 4, 'four dead-letter log lines');
    expect(producer.logs(DEAD_LETTER_LOG)).toHaveLength(4);
    const before = handled(out).length;
    await waitFor(() => handled(out).length > before + 100, 'the stream to go on');
    expect(producer.logs('stage crashed')).toEqual([]);
    expect(consumer.logs('stage crashed')).toEqual([]);
    expect(producer.child.exitCode).toBeNull();
  });

  it('a pending entry trimmed away before the node restarted is dead-lettered at boot; the node starts', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 200 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    // Node b read an entry and died before acknowledging it; then the stream was trimmed (MAXLEN ~, XTRIM).
    const inbox = `sf:${f.namespace}:inbox:recorder@b`;
    await redis.xgroup('CREATE', inbox, 'sf', '0', 'MKSTREAM');
    const id = await forge(f.namespace, 'recorder@b', { t: 'events', key: 'recorder@b>counter@a', epoch: 1, seq: 0, events: [7] });
    await redis.xreadgroup('GROUP', 'sf', 'b', 'COUNT', 10, 'STREAMS', inbox, '>');
    await redis.xtrim(inbox, 'MAXLEN', 0);
    const consumer = f.agent(topology, 'b');
    f.agent(topology, 'a');
    await waitFor(() => handled(out).length >= 200, 'the stream to finish', 30_000);
    expect(handled(out)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    const letters = await deadLetters(f.namespace);
    expect(letters.map((l) => [l.entry, l.kind])).toEqual([[id, 'trimmed']]);
    expect(letters[0]?.reason).toMatch(/deleted before it was handled/);
    expect(consumer.child.exitCode).toBeNull();
    expect(Number(((await redis.xpending(inbox, 'sf')) as [number])[0])).toBe(0);
  });

  it('a subscribe from a node that is not alive is refused: a broadcast producer does not wait on it', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 300, dispatcher: { type: broadcast } }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const producer = f.agent(topology, 'a', FAST_BEATS);
    await waitFor(async () => (await redis.exists(`sf:${f.namespace}:hb:a`)) === 1, 'the producer node to beat');
    await forge(f.namespace, 'counter@a', {
      t: 'subscribe',
      key: 'ghost@z>counter@a',
      epoch: 1,
      consumer: 'ghost@z',
      incarnation: randomUUID(),
      options: { maxDemand: 10 },
    });
    await waitFor(async () => (await deadLetters(f.namespace)).length === 1, 'the subscribe to be dead-lettered');
    const [letter] = await deadLetters(f.namespace);
    expect(letter?.kind).toBe('refused');
    expect(letter?.reason).toMatch(/node z is not alive/);
    f.agent(topology, 'b', FAST_BEATS);
    await waitFor(() => handled(out).length >= 300, 'every event at the real consumer', 30_000);
    expect(handled(out)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(producer.child.exitCode).toBeNull();
  });

  it('a subscription whose consumer node stops beating expires, even when the producer never saw that node alive', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 300, dispatcher: { type: broadcast } }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out} }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    // The producer's node checks liveness every 2 s; the ghost's beat lives 300 ms, so no check of it ever saw it alive.
    const producer = f.agent(topology, 'a', { STAGEFABRIC_HEARTBEAT_MS: '2000' });
    await waitFor(async () => (await redis.exists(`sf:${f.namespace}:hb:a`)) === 1, 'the producer node to beat');
    const incarnation = randomUUID();
    const now = Date.now();
    await redis.set(
      `sf:${f.namespace}:hb:z`,
      JSON.stringify({ node: 'z', incarnation, startedAtMs: now, atMs: now, ttlMs: 300 }),
      'PX',
      300,
    );
    await forge(f.namespace, 'counter@a', {
      t: 'subscribe',
      key: 'ghost@z>counter@a',
      epoch: 1,
      consumer: 'ghost@z',
      incarnation,
      options: { maxDemand: 10 },
    });
    f.agent(topology, 'b', FAST_BEATS);
    await waitFor(() => handled(out).length >= 300, 'every event at the real consumer once the ghost expired', 30_000);
    expect(handled(out)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(producer.child.exitCode).toBeNull();
  });

  it('a cancel with a malformed reason is dead-lettered; the rest of the batch is handled and the subscription goes on', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const audit = f.file('audit.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 600 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 5 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const producer = f.agent(topology, 'a', FAST_BEATS);
    f.agent(topology, 'b', { ...FAST_BEATS, STAGEFABRIC_DEMAND_AUDIT: audit });
    await waitFor(() => handled(out).length >= 50, 'the stream to start');
    await waitFor(() => {
      try {
        return currentSubscription(audit).epoch > 0;
      } catch {
        return false;
      }
    }, 'the audit to name the subscription');
    const { key, epoch } = currentSubscription(audit);
    for (const reason of [null, { error: 42 }, { shutdown: 'x'.repeat(100_000) }, ['a']]) {
      await forge(f.namespace, 'counter@a', { t: 'cancel', key, epoch, from: 'consumer', kind: 'cancel', reason });
    }
    await waitFor(async () => (await deadLetters(f.namespace)).length === 4, 'four dead letters');
    for (const l of await deadLetters(f.namespace)) {
      expect(l.kind).toBe('malformed');
      expect(l.reason).toMatch(/cancel reason/);
    }
    await waitFor(() => handled(out).length >= 600, 'the stream to finish: the subscription was never cancelled', 30_000);
    expect(handled(out)).toEqual(Array.from({ length: 600 }, (_, i) => i));
    expect(readRecords(out).filter((r) => r.cancel)).toEqual([]);
    await waitFor(
      async () => Number(((await redis.xpending(`sf:${f.namespace}:inbox:counter@a`, 'sf')) as [number])[0]) === 0,
      'nothing left pending on the producer inbox',
    );
    expect(producer.child.exitCode).toBeNull();
  });

  it('three 40 MB events for a subscription that does not exist are dead-lettered, not held: memory comes back', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100000000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    f.agent(topology, 'a');
    const consumer = f.agent(topology, 'b');
    await waitFor(() => handled(out).length >= 100, 'the stream to start');
    const baseline = rssBytes(consumer);
    const huge = 'x'.repeat(40 * 1024 * 1024);
    for (let i = 0; i < 3; i++) {
      await forge(f.namespace, 'recorder@b', { t: 'events', key: 'recorder@b>ghost@z', epoch: 1, seq: i, events: [huge] });
    }
    await waitFor(async () => (await deadLetters(f.namespace)).length === 3, 'three dead letters', 30_000);
    for (const l of await deadLetters(f.namespace)) expect(['oversized', 'refused']).toContain(l.kind);
    // Read, refused and let go: the node's memory returns near where it was (the stream goes on meanwhile). When is up to
    // V8's major collection of large objects, which a lightly allocating process runs late: 11–18 s here, past 30 s on a loaded machine.
    await waitFor(() => rssBytes(consumer) < baseline + 100 * 1024 * 1024, 'the consumer node to let the 120 MB go', 90_000, 200);
    expect(consumer.child.exitCode).toBeNull();
  }, 150_000);

  it('a stray write to a node’s heartbeat key is not taken for a restart', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 3000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 20 }] }
`);
    const producer = f.agent(topology, 'a', FAST_BEATS);
    f.agent(topology, 'b', FAST_BEATS);
    await waitFor(() => handled(out).length >= 100, 'the stream to start');
    // Ten stray writes, each left until node b beats over it.
    const key = `sf:${f.namespace}:hb:b`;
    for (let i = 0; i < 10; i++) {
      const stray = randomUUID();
      await redis.set(key, stray, 'PX', 600);
      await waitFor(async () => (await redis.get(key)) !== stray, 'node b to beat over the stray value');
    }
    await waitFor(() => handled(out).length >= 3000, 'the stream to finish', 30_000);
    expect(handled(out)).toEqual(Array.from({ length: 3000 }, (_, i) => i));
    expect(producer.logs('node down: its subscriptions are cancelled with noconnection')).toEqual([]);
    expect(producer.logs('heartbeat refused').length).toBeGreaterThan(0);
  });

  it('an agent refuses to start under the name of a live node (exit 2); a node restarted after kill -9 waits out its old beat', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 100000000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
`);
    const first = f.agent(topology, 'a');
    f.agent(topology, 'b');
    await waitFor(() => handled(out).length >= 50, 'the stream to start');
    const twin = f.agent(topology, 'a');
    expect(await twin.exited).toBe(2);
    expect(twin.stderr).toMatch(/node name "a" is taken/);
    expect(first.child.exitCode).toBeNull();
    // kill -9 and start again at once: its old beat still lives, and nobody renews it.
    await first.kill('SIGKILL');
    const again = f.agent(topology, 'a');
    await waitFor(() => again.logs('agent started').length === 1, 'the restarted node to start', 30_000);
    const before = handled(out).length;
    await waitFor(() => handled(out).length > before + 100, 'events again from the restarted producer', 30_000);
    expect(again.child.exitCode).toBeNull();
  });

  it('XADDs refused by Redis (out of memory) are sent again: nothing lost, nothing stalled', async () => {
    const own = await startLocalRedis();
    const client = new Redis(own.url);
    try {
      const f = await testFabric(own.url);
      const out = f.file('out.jsonl');
      const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 2000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 20 }] }
`);
      const agents = [f.agent(topology, 'a'), f.agent(topology, 'b')];
      await waitFor(() => handled(out).length >= 300, 'the stream to start');
      // Shorter than a heartbeat lives (3 s): the nodes never count each other dead, only the sends fail.
      const oomErrors = async () => Number(/errorstat_OOM:count=(\d+)/.exec(await client.info('errorstats'))?.[1] ?? 0);
      await client.config('SET', 'maxmemory', '1');
      // A few dozen refused writes, well within a heartbeat's life (3 s): the nodes never count each other dead.
      await waitFor(async () => (await oomErrors()) >= 3, 'Redis to refuse writes', 3000, 5);
      await client.config('SET', 'maxmemory', '0');
      await waitFor(() => new Set(handled(out)).size >= 2000, 'every event after the outage', 30_000);
      expect(handled(out)).toEqual(Array.from({ length: 2000 }, (_, i) => i));
      expect(agents.some((a) => a.logs('send failed; retrying').length > 0)).toBe(true);
    } finally {
      await killAll();
      await client.quit();
      await own.stop();
    }
  });
});
