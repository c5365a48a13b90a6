import { randomUUID } from 'node:crypto';
import {
  type DeadLetter,
  encodeMessage,
  FabricSecret,
  type InboundEntry,
  RedisTransport,
  redisKeys,
  type SendFailure,
  type WireMessage,
} from '@stagefabric/fabric';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { transportConformance } from '../../packages/fabric/test/transport.conformance.js';
import { startLocalRedis } from '../support/servers.js';
import { waitFor } from '../support/wait-for.js';

const url = inject('redisUrl');
const raw = new Redis(url);
afterAll(async () => {
  await raw.quit();
});

transportConformance('redis streams', () => {
  const namespace = `conf${randomUUID().slice(0, 8)}`;
  const keys = redisKeys(namespace);
  return {
    make: (node, options = {}) => new RedisTransport({ url, node, namespace, blockMs: 100, ...options }),
    writeRaw: async (inbox, bytes) => void (await raw.xadd(keys.inbox(inbox), '*', 'm', bytes)),
    writeHeartbeat: async (node, value, ttlMs) => void (await raw.set(keys.heartbeat(node), value, 'PX', ttlMs)),
  };
});

describe('redis streams: refused sends and signed entries', () => {
  const SECRET = 'a-secret-of-the-fabric-0123456789';
  const KEY = 'c@b>p@a';
  const ask = (hwm: number): WireMessage => ({ t: 'ask', key: KEY, epoch: 1, hwm });

  it('sends Redis refuses are tried again, in order; past sendRetryMs they are given up as send-failed', async () => {
    const own = await startLocalRedis();
    const admin = new Redis(own.url);
    const namespace = `oom${randomUUID().slice(0, 8)}`;
    const reader = new RedisTransport({ url: own.url, node: 'a', namespace, blockMs: 100 });
    const writer = new RedisTransport({ url: own.url, node: 'b', namespace, blockMs: 100, sendRetryMs: 1500 });
    try {
      const got: number[] = [];
      await reader.open(['p@a'], (e) => {
        got.push((e.message as { hwm: number }).hwm);
        reader.ack(e.inbox, [e.entryId]);
      });
      const retries: string[] = [];
      const failed: SendFailure[] = [];
      writer.on('send-retry', ({ error }) => retries.push(error.message));
      writer.on('send-failed', (f) => failed.push(f));
      // Refused for a while, then accepted: everything arrives, in order.
      await admin.config('SET', 'maxmemory', '1');
      for (let i = 1; i <= 3; i++) writer.send('p@a', ask(i));
      await waitFor(() => retries.length >= 2, 'two refusals');
      expect(retries[0]).toMatch(/OOM|EXECABORT/);
      writer.send('p@a', ask(4));
      await admin.config('SET', 'maxmemory', '0');
      await waitFor(() => got.length === 4, 'the four asks');
      expect(got).toEqual([1, 2, 3, 4]);
      expect(failed).toEqual([]);
      expect(writer.stats.sendRetries).toBeGreaterThan(0);
      // Refused for longer than sendRetryMs: given up, each message reported for its subscription to end.
      await admin.config('SET', 'maxmemory', '1');
      writer.send('p@a', ask(5));
      writer.send('p@a', ask(6));
      await waitFor(() => failed.length === 2, 'both given up', 10_000);
      expect(failed.map((f) => (f.message as { hwm: number }).hwm)).toEqual([5, 6]);
      await admin.config('SET', 'maxmemory', '0');
      writer.send('p@a', ask(7));
      await waitFor(() => got.length === 5, 'the next send');
      expect(got).toEqual([1, 2, 3, 4, 7]);
    } finally {
      await writer.close();
      await reader.close();
      admin.disconnect();
      await own.stop();
    }
  });

  it('a signed entry moved to another inbox is not authentic there', async () => {
    const namespace = `mac${randomUUID().slice(0, 8)}`;
    const reader = new RedisTransport({ url, node: 'a', namespace, blockMs: 100, secret: SECRET });
    try {
      const dead: DeadLetter[] = [];
      const got: InboundEntry[] = [];
      reader.on('dead-letter', (d) => dead.push(d));
      await reader.open(['y@a'], (e) => got.push(e));
      const bytes = encodeMessage(ask(1));
      const keys = redisKeys(namespace);
      // Signed for x@a, written to y@a; and signed for y@a, but in another namespace.
      await raw.xadd(keys.inbox('y@a'), '*', 'm', bytes, 'a', new FabricSecret(SECRET, namespace).signEntry('x@a', bytes));
      await raw.xadd(keys.inbox('y@a'), '*', 'm', bytes, 'a', new FabricSecret(SECRET, 'other').signEntry('y@a', bytes));
      await raw.xadd(keys.inbox('y@a'), '*', 'm', bytes, 'a', new FabricSecret(SECRET, namespace).signEntry('y@a', bytes));
      await waitFor(() => dead.length === 2 && got.length === 1, 'two refused, the right one delivered');
      expect(dead.map((d) => d.kind)).toEqual(['unauthentic', 'unauthentic']);
    } finally {
      await reader.close();
    }
  });
});
