import { MemoryFabric, MemoryTransport } from '../src/index.js';
import { transportConformance } from './transport.conformance.js';

transportConformance('in-process', () => {
  const fabric = new MemoryFabric();
  return {
    make: () => new MemoryTransport({ fabric }),
    writeRaw: async (inbox, bytes) => void fabric.appendRaw(inbox, bytes),
  };
});
