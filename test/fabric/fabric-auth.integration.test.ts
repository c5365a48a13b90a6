import { existsSync, readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { Packr } from 'msgpackr';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { freePort } from '../support/servers.js';
import { handled, killAll, STAGES, testFabric, waitFor } from './agent-process.js';

const redisUrl = inject('redisUrl');
const redis = new Redis(redisUrl);
const packr = new Packr({ useRecords: false });
const SECRET = 'the-fabric-secret-0123456789abcdef';
const FAST_BEATS = { STAGEFABRIC_HEARTBEAT_MS: '200' };

afterEach(async () => {
  await killAll();
});
afterAll(async () => {
  await redis.quit();
});

describe('a fabric with a shared secret', () => {
  it('refuses forged messages and heartbeats, and a node without the secret, while its own traffic flows exactly', async () => {
    const f = await testFabric(redisUrl);
    const out = f.file('out.jsonl');
    const intruderOut = f.file('intruder.jsonl');
    const audit = f.file('audit.jsonl');
    const topology = await f.topology(`
stages:
  counter: { module: ${STAGES}, args: { limit: 3000 }, nodes: [a] }
  recorder: { module: ${STAGES}, args: { file: ${out}, delayMs: 2 }, nodes: [b], subscribe: [{ to: counter, maxDemand: 10 }] }
  intruder: { module: ${STAGES}, export: recorder, args: { file: ${intruderOut} }, nodes: [c], subscribe: [{ to: counter, maxDemand: 10, cancel: temporary }] }
`);
    const port = await freePort();
    const withSecret = { ...FAST_BEATS, STAGEFABRIC_SECRET: SECRET };
    const producer = f.agent(topology, 'a', { ...withSecret, STAGEFABRIC_METRICS_PORT: String(port) });
    f.agent(topology, 'b', { ...withSecret, STAGEFABRIC_DEMAND_AUDIT: audit });
    await waitFor(() => handled(out).length >= 100, 'the stream to start');
    const consumerRecord = () =>
      (existsSync(audit) ? readFileSync(audit, 'utf8') : '')
        .trim()
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { side: string; key: string; epoch: number })
        .filter((r) => r.side === 'consumer')
        .at(-1);
    await waitFor(() => consumerRecord() !== undefined, 'the audit to name the subscription');
    const { key, epoch } = consumerRecord() as { key: string; epoch: number };
    // Well formed and within demand, but unsigned: without the secret it would be served.
    await redis.xadd(`sf:${f.namespace}:inbox:counter@a`, '*', 'm', packr.pack({ t: 'ask', key, epoch, hwm: 5 }));
    // A beat for b of a later incarnation, in the right format, unsigned: without the secret it would pass for a restart.
    // b's own beats overwrite it, so it is written again until the producer has read one.
    const forgeBeat = async () => {
      const now = Date.now();
      await redis.set(
        `sf:${f.namespace}:hb:b`,
        JSON.stringify({ node: 'b', incarnation: 'forged', startedAtMs: now + 60_000, atMs: now, ttlMs: 60_000 }),
        'PX',
        60_000,
      );
    };
    await forgeBeat();
    // A node started without the secret: what it sends is refused, and it is not taken for alive.
    const intruder = f.agent(topology, 'c', FAST_BEATS);
    await waitFor(
      () => producer.logs('inbox entry moved to the dead-letter stream').filter((l) => l.kind === 'unauthentic').length >= 2,
      'the forged ask and the intruder’s subscribe refused',
    );
    await waitFor(
      async () => {
        if (producer.logs('heartbeat refused').some((l) => l.unauthentic === true)) return true;
        await forgeBeat();
        return false;
      },
      'an unauthentic heartbeat refused',
      20_000,
      50,
    );
    await waitFor(() => handled(out).length >= 3000, 'the stream to finish', 30_000);
    expect(handled(out)).toEqual(Array.from({ length: 3000 }, (_, i) => i));
    expect(handled(intruderOut)).toEqual([]);
    expect(producer.logs('node down: its subscriptions are cancelled with noconnection')).toEqual([]);
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
    expect(metrics).toMatch(/stagefabric_fabric_auth_failures_total\{what="message"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/stagefabric_fabric_auth_failures_total\{what="heartbeat"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/stagefabric_transport_dead_letters_total\{reason="unauthentic"[^}]*\} [1-9]/);
    expect(intruder.child.exitCode).toBeNull();
  });
});
