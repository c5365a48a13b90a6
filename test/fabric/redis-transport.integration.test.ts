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
  return {
    make: (node) => new RedisTransport({ url, node, namespace, blockMs: 100 }),
    writeRaw: async (inbox, bytes) => void (await raw.xadd(redisKeys(namespace).inbox(inbox), '*', 'm', bytes)),
  };
});
