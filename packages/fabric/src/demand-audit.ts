import { appendFileSync } from 'node:fs';
import type { DemandRecord } from './remote-producer.js';

/**
 * Writes a node's demand records to a file, one JSON line per subscription
 * whose counts changed since the last write: `{node, side, key, epoch,
 * asked, received, at}`. Written synchronously, so a process killed at any moment
 * leaves every line it wrote whole. An auditor reading the file checks that
 * no subscription ever received more than it asked for.
 */
export function demandAuditFile(path: string, node: string): (records: readonly DemandRecord[]) => void {
  const last = new Map<string, string>();
  return (records) => {
    let lines = '';
    for (const r of records) {
      const id = `${r.side}:${r.key}#${r.epoch}`;
      const counts = `${r.asked}/${r.received}`;
      if (last.get(id) === counts) continue;
      last.set(id, counts);
      lines += `${JSON.stringify({ node, ...r, at: Date.now() })}\n`;
    }
    // Forget ended subscriptions once written: the map holds live ones only.
    const live = new Set(records.map((r) => `${r.side}:${r.key}#${r.epoch}`));
    for (const id of last.keys()) if (!live.has(id)) last.delete(id);
    if (lines !== '') appendFileSync(path, lines);
  };
}
