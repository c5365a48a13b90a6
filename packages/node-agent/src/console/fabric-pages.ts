import { ago, clip, type Html, h } from './console-html.js';
import { fabricGraph } from './fabric-graph.js';
import type { DeadLetterEntry, FabricView } from './fabric-watch.js';

/** The live part of the fabric page: graph, nodes, stages, subscriptions, inboxes, dead letters. Streamed again every refresh. */
export function fabricLive(view: FabricView, dead: { letters: readonly DeadLetterEntry[]; total: number } | undefined): Html {
  const { status } = view.sample;
  const { rates } = view;
  const at = view.sample.at;
  const nodes = h`<table><thead><tr><th>Node</th><th>State</th><th class="num">Last beat</th><th>Stages</th></tr></thead><tbody>
${status.nodes.map(
  (n) => h`<tr data-node="${n.node}"><td>${n.node}</td><td><span class="state ${n.up ? 'up' : 'down'}">${n.up ? 'up' : 'down'}</span></td>
<td class="num">${ago(n.lastBeatAgeMs)} ago</td><td>${n.stages.map((s) => s.name).join(', ')}</td></tr>`,
)}
</tbody></table>`;
  const stages = h`<table><thead><tr><th>Stage</th><th>Node</th><th>Kind</th><th class="num">In/s</th><th class="num">Out/s</th><th class="num">Backlog</th><th class="num">Buffer</th><th></th></tr></thead><tbody>
${rates.stages.map((s) => {
  const bottleneck = rates.bottleneck === `${s.stage}@${s.node}`;
  return h`<tr><td>${s.stage}</td><td>${s.node}${s.up ? '' : h` <span class="state down">down</span>`}</td><td>${s.kind}</td>
<td class="num">${s.inPerS}</td><td class="num">${s.outPerS}</td><td class="num">${s.backlog}</td><td class="num">${s.buffer}</td>
<td>${bottleneck ? h`<strong class="bad">bottleneck</strong>` : ''}</td></tr>`;
})}
</tbody></table>`;
  const subscriptions = h`<table><thead><tr><th>Producer</th><th>Consumer</th><th class="num">Events/s</th><th class="num">Outstanding demand</th></tr></thead><tbody>
${rates.subscriptions.map(
  (s) => h`<tr><td>${s.producer}</td><td>${s.consumer}</td><td class="num">${s.perS}</td><td class="num">${s.outstandingDemand}</td></tr>`,
)}
</tbody></table>`;
  const inboxes = h`<table><thead><tr><th>Inbox</th><th class="num">Entries (lag)</th><th class="num">Pending (read, not acknowledged)</th></tr></thead><tbody>
${status.inboxes.map((i) => h`<tr><td>${i.inbox}</td><td class="num">${i.entries}</td><td class="num">${i.pending}</td></tr>`)}
</tbody></table>`;
  const letters =
    dead === undefined
      ? h`<p class="muted">Dead letters could not be read.</p>`
      : dead.total === 0
        ? h`<p class="muted">None: every inbox entry was well formed.</p>`
        : h`<p>${dead.total} in the stream${dead.total > dead.letters.length ? h`, the newest ${dead.letters.length} shown` : ''}.</p>
<table><thead><tr><th>When</th><th>Inbox</th><th>Reason</th><th class="num">Bytes</th></tr></thead><tbody>
${dead.letters.map(
  (d) =>
    h`<tr><td><a href="/fabric/dead-letters/${d.id}">${d.at.toISOString()}</a></td><td>${d.inbox}</td><td>${clip(d.reason, 140)}</td><td class="num">${d.raw.length}</td></tr>`,
)}
</tbody></table>`;
  return h`${view.error === undefined ? '' : h`<div class="note bad">${view.error}</div>`}
<p class="muted">Namespace ${status.namespace} · read ${new Date(at).toISOString()} · ${status.nodes.filter((n) => n.up).length} of ${status.nodes.length} nodes up${
    rates.bottleneck === undefined ? '' : h` · bottleneck <strong class="bad">${rates.bottleneck}</strong>`
  }</p>
<div class="graph" id="fabric-graph">${fabricGraph(status, rates)}</div>
<h2>Nodes</h2>${nodes}
<h2>Stages</h2>${stages}
<h2>Subscriptions</h2>${subscriptions}
<h2>Inboxes</h2>${inboxes}
<h2>Dead letters</h2>${letters}`;
}

export function fabricPage(live: Html): Html {
  return h`<h1>Fabric</h1>
<p class="muted">Stages on their nodes, subscriptions with the events per second they carry and the demand outstanding on them; updated live.</p>
<div id="fabric-live" data-live="/fabric/live">${live}</div>`;
}

export function noFabricPage(): Html {
  return h`<h1>Fabric</h1><div class="note">This console reads no fabric: it was started without REDIS_URL, so there are no nodes to show.</div>`;
}

/** A dead letter: where it was found, why it was refused, and its bytes (hex and printable text). */
export function deadLetterPage(letter: DeadLetterEntry): Html {
  const rows: Html[] = [];
  for (let i = 0; i < letter.raw.length; i += 16) {
    const chunk = letter.raw.subarray(i, i + 16);
    const hex = [...chunk].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const text = [...chunk].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    rows.push(h`${i.toString(16).padStart(6, '0')}  ${hex.padEnd(47)}  ${text}\n`);
  }
  return h`<h1>Dead letter ${letter.id}</h1>
<dl class="facts"><dt>When</dt><dd>${letter.at.toISOString()}</dd><dt>Inbox</dt><dd>${letter.inbox}</dd><dt>Inbox entry</dt><dd>${letter.entry}</dd>
<dt>Reason</dt><dd class="bad">${letter.reason}</dd><dt>Bytes</dt><dd>${letter.raw.length} (at most the first 4096 are kept)</dd></dl>
<h2>Bytes</h2><pre>${rows}</pre>
<p><a href="/fabric">Back to the fabric</a></p>`;
}
