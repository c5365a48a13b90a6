import { afterEach } from 'vitest';
import type { TaskStore } from '../src/index.js';

/**
 * The stores a conformance suite opens, each closed after its test. Call
 * inside the suite's `describe`. `fresh()` is a new, migrated, empty store;
 * `peerOf(store)` another node's view of the same data (the same instance
 * where the store lives in one process).
 */
export function suiteStores(make: () => Promise<TaskStore>, peer: (store: TaskStore) => Promise<TaskStore> = async (s) => s) {
  const stores: TaskStore[] = [];
  const fresh = async () => {
    const s = await make();
    stores.push(s);
    return s;
  };
  const peerOf = async (store: TaskStore) => {
    const p = await peer(store);
    if (p !== store) stores.push(p);
    return p;
  };
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
  });
  return { fresh, peerOf };
}
