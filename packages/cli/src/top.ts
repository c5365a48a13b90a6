import type { FabricStatus } from '@stagefabric/fabric';
import { escapeControl } from './status.js';

interface Sample {
  readonly at: number;
  readonly status: FabricStatus;
}

export interface TopRow {
  readonly stage: string;
  readonly node: string;
  readonly kind: string;
  readonly inPerS: number;
  readonly outPerS: number;
  /** Events waiting for this stage: its inbox entries not yet handled, plus its mailbox. */
  readonly backlog: number;
  readonly buffer: string;
}

/** Rates between two status samples, and the stage most work waits on. */
export function topRows(before: Sample, after: Sample): { rows: TopRow[]; bottleneck: string | undefined } {
  const seconds = Math.max(0.001, (after.at - before.at) / 1000);
  const old = new Map<string, (typeof before.status.nodes)[number]['stages'][number]>(
    before.status.nodes.flatMap((n) => n.stages.map((s) => [`${s.name}@${n.node}`, s] as const)),
  );
  const inbox = new Map(after.status.inboxes.map((i) => [i.inbox, i.entries]));
  const stages = after.status.nodes.flatMap((n) =>
    n.stages.map((s) => {
      const id = `${s.name}@${n.node}`;
      const prev = old.get(id);
      const row: TopRow = {
        stage: s.name,
        node: n.up ? n.node : `${n.node} (down)`,
        kind: s.kind,
        inPerS: Math.max(0, Math.round((s.eventsIn - (prev?.eventsIn ?? s.eventsIn)) / seconds)),
        outPerS: Math.max(0, Math.round((s.eventsOut - (prev?.eventsOut ?? s.eventsOut)) / seconds)),
        backlog: (inbox.get(id) ?? 0) + s.mailbox,
        buffer: s.kind === 'consumer' ? '-' : s.bufferCapacity < 0 ? `${s.bufferLength}` : `${s.bufferLength}/${s.bufferCapacity}`,
      };
      // A stage whose consumers have asked for nothing more: its backlog waits on them, not on it.
      const waitsOnConsumers = s.downstream.length > 0 && s.downstream.every((d) => d.asked <= d.sent);
      return { row, waitsOnConsumers };
    }),
  );
  const rows = stages.map((x) => x.row);
  // The bottleneck is where work waits: the consumer-side stage with the largest backlog that is not itself waiting on its consumers.
  const candidates = stages
    .filter((x) => x.row.kind !== 'producer' && x.row.backlog > 0 && !x.waitsOnConsumers)
    .map((x) => x.row)
    .sort((a, b) => b.backlog - a.backlog);
  const top = candidates[0];
  return { rows, bottleneck: top === undefined ? undefined : `${top.stage}@${top.node}` };
}

export function renderTop(rows: readonly TopRow[], bottleneck: string | undefined, namespace: string): string {
  const header = ['STAGE', 'NODE', 'KIND', 'IN/S', 'OUT/S', 'BACKLOG', 'BUFFER', ''];
  const cells = rows.map((r) => [
    escapeControl(r.stage),
    escapeControl(r.node),
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
