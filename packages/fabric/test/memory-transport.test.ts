import { MemoryFabric, MemoryTransport } from '../src/index.js';
import { transportConformance } from './transport.conformance.js';

transportConformance('in-process', () => {
  const fabric = new MemoryFabric();
  return {
    make: (_node, options = {}) => new MemoryTransport({ fabric, ...options }),
    writeRaw: async (inbox, bytes) => void fabric.appendRaw(inbox, bytes),
    writeHeartbeat: async (node, value, ttlMs) => fabric.writeHeartbeat(node, value, ttlMs),
  };
});
