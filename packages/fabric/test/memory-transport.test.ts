import { FakeClock } from '@stagefabric/runtime';
import { MemoryFabric, MemoryTransport } from '../src/index.js';
import { transportConformance } from './transport.conformance.js';

transportConformance('in-process', () => {
  const clock = new FakeClock(1_000_000);
  const fabric = new MemoryFabric(() => clock.now());
  return {
    make: (_node, options = {}) => new MemoryTransport({ fabric, ...options }),
    writeRaw: async (inbox, bytes) => void fabric.appendRaw(inbox, bytes),
    elapse: (ms) => clock.advance(ms),
    writeHeartbeat: async (node, value, ttlMs) => fabric.writeHeartbeat(node, value, ttlMs),
  };
});
