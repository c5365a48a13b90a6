import { randomUUID } from 'node:crypto';
import { RedisTransport, redisKeys } from '@stagefabric/fabric';
import { Redis } from 'ioredis';
import { afterAll, inject } from 'vitest';
import { transportConformance } from '../../packages/fabric/test/transport.conformance.js';

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
