import type { FabricStatus } from '@stagefabric/fabric';
import type { FabricRates, StageRate } from '../fabric-rates.js';
import { clip, type Html, h } from './console-html.js';

const BOX_W = 200;
const BOX_H = 58;
const COL_GAP = 130;
const ROW_GAP = 16;
const BAND_PAD = 14;
const BAND_LABEL = 22;
const LEFT = 16;
/** Subscription chains deeper than this are drawn in the last column; stages stay on their node's band. */
const MAX_DEPTH = 12;

interface Placed {
  readonly rate: StageRate;
  readonly x: number;
  readonly y: number;
}

/**
 * The topology as an inline SVG, computed here: one band per node (greyed
 * and dashed when the node is down), each stage a box on its node's band in
 * the column of its depth (producers left, consumers right), each
 * subscription an arrow from producer to consumer labelled with the events
 * per second it carries and the demand outstanding on it, the bottleneck
 * outlined in red. Every name is escaped: they come from the wire.
 */
export function fabricGraph(status: FabricStatus, rates: FabricRates): Html {
  const stages = rates.stages;
  if (stages.length === 0) return h`<p class="muted">No stage is running: no node of this namespace has published a status.</p>`;
  const id = (s: StageRate) => `${s.stage}@${s.node}`;
  const upstream = new Map<string, string[]>();
  for (const sub of rates.subscriptions) upstream.set(sub.consumer, [...(upstream.get(sub.consumer) ?? []), sub.producer]);
  const depthOf = new Map<string, number>();
  const depth = (key: string, seen: Set<string>): number => {
    const known = depthOf.get(key);
    if (known !== undefined) return known;
    // Snapshots are read from Redis, not trusted: a cycle there must not loop.
    if (seen.has(key) || seen.size > MAX_DEPTH) return 0;
    seen.add(key);
    const ups = upstream.get(key) ?? [];
    const d = ups.length === 0 ? 0 : Math.min(MAX_DEPTH, 1 + Math.max(...ups.map((u) => depth(u, seen))));
    seen.delete(key);
    depthOf.set(key, d);
    return d;
  };
  for (const s of stages) depth(id(s), new Set());

  const nodes = status.nodes.map((n) => ({ node: n.node, up: n.up }));
  const placed = new Map<string, Placed>();
  const bands: { node: string; up: boolean; y: number; height: number }[] = [];
  let y = 10;
  for (const n of nodes) {
    const here = stages.filter((s) => s.node === n.node);
    const perColumn = new Map<number, number>();
    for (const s of here) {
      const col = depthOf.get(id(s)) ?? 0;
      const row = perColumn.get(col) ?? 0;
      perColumn.set(col, row + 1);
      placed.set(id(s), { rate: s, x: LEFT + BAND_PAD + col * (BOX_W + COL_GAP), y: y + BAND_LABEL + BAND_PAD + row * (BOX_H + ROW_GAP) });
    }
    const rows = Math.max(1, ...perColumn.values());
    const height = BAND_LABEL + 2 * BAND_PAD + rows * BOX_H + (rows - 1) * ROW_GAP;
    bands.push({ node: n.node, up: n.up, y, height });
    y += height + 12;
  }
  const columns = Math.max(0, ...depthOf.values()) + 1;
  const width = LEFT * 2 + BAND_PAD * 2 + columns * BOX_W + (columns - 1) * COL_GAP;
  const height = y;

  const bandMarks = bands.map(
    (b) => h`<g class="node" data-node="${b.node}">
<rect class="band${b.up ? '' : ' down'}" x="${LEFT}" y="${b.y}" width="${width - 2 * LEFT}" height="${b.height}" rx="8"></rect>
<text class="title" x="${LEFT + 10}" y="${b.y + 17}">${clip(b.node, 60)}</text>
<text class="${b.up ? 'small' : 'flag'}" x="${LEFT + 14 + Math.min(60, b.node.length) * 7.2}" y="${b.y + 17}">${b.up ? 'up' : 'down'}</text>
</g>`,
  );
  const boxes = [...placed.values()].map((p) => {
    const s = p.rate;
    const bottleneck = rates.bottleneck === id(s);
    const cls = `box${bottleneck ? ' bottleneck' : ''}${s.up ? '' : ' down'}`;
    return h`<g class="stage" data-stage="${s.stage}" data-node="${s.node}"${bottleneck ? h` data-bottleneck="true"` : ''}>
<title>${s.stage} on ${s.node}: ${s.kind}, ${s.inPerS} in/s, ${s.outPerS} out/s, backlog ${s.backlog}, buffer ${s.buffer}</title>
<rect class="${cls}" x="${p.x}" y="${p.y}" width="${BOX_W}" height="${BOX_H}" rx="6"></rect>
<text class="title" x="${p.x + 8}" y="${p.y + 17}">${clip(s.stage, bottleneck ? 16 : 26)}</text>
${bottleneck ? h`<text class="flag" x="${p.x + BOX_W - 8}" y="${p.y + 17}" text-anchor="end">bottleneck</text>` : ''}
<text class="small" x="${p.x + 8}" y="${p.y + 33}">${s.kind} · backlog ${s.backlog}</text>
<text class="small" x="${p.x + 8}" y="${p.y + 49}">in ${s.inPerS}/s · out ${s.outPerS}/s</text>
</g>`;
  });
  const edges = rates.subscriptions.flatMap((sub) => {
    const from = placed.get(sub.producer);
    const to = placed.get(sub.consumer);
    if (from === undefined || to === undefined) return [];
    const x1 = from.x + BOX_W;
    const y1 = from.y + BOX_H / 2;
    const x2 = to.x;
    const y2 = to.y + BOX_H / 2;
    const bend = Math.max(40, (x2 - x1) / 2);
    const mx = (x1 + x2) / 2;
    const my = (y1 + y2) / 2;
    return [
      h`<g class="subscription" data-producer="${sub.producer}" data-consumer="${sub.consumer}">
<title>${sub.consumer} subscribes to ${sub.producer}: ${sub.perS} events/s, ${sub.outstandingDemand} asked for and not yet sent</title>
<path class="edge" d="M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2 - 2} ${y2}" marker-end="url(#arrow)"></path>
<text class="edge" x="${mx}" y="${my - 6}" text-anchor="middle">${sub.perS}/s · demand ${sub.outstandingDemand}</text>
</g>`,
    ];
  });
  return h`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="fabric topology">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#475467"></path></marker></defs>
${bandMarks}${edges}${boxes}
</svg>`;
}
