import type { StageRate } from '@stagefabric/node-agent';
import { escapeControl } from './status.js';

/** One frame of `stagectl top`: the rates of fabricRates as a table, the bottleneck marked. */
export function renderTop(rows: readonly StageRate[], bottleneck: string | undefined, namespace: string): string {
  const header = ['STAGE', 'NODE', 'KIND', 'IN/S', 'OUT/S', 'BACKLOG', 'BUFFER', ''];
  const cells = rows.map((r) => [
    escapeControl(r.stage),
    escapeControl(r.up ? r.node : `${r.node} (down)`),
    r.kind,
    String(r.inPerS),
    String(r.outPerS),
    String(r.backlog),
    r.buffer,
    `${r.stage}@${r.node}` === bottleneck ? '<- bottleneck' : '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] ?? '').length)));
  const line = (c: string[]) =>
    c
      .map((x, i) => x.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return `stagefabric top — namespace ${escapeControl(namespace)} — ${new Date().toISOString()}\n\n${[header, ...cells].map(line).join('\n')}\n`;
}
