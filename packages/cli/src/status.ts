import type { FabricStatus } from '@stagefabric/fabric';
import type { TaskCount } from '@stagefabric/tasks';

/**
 * Text from Redis is whatever someone wrote there: control characters
 * (terminal escape sequences among them) are printed escaped, as `\x1b`,
 * never sent to the terminal. `keepNewlines` leaves line breaks as they are.
 */
export function escapeControl(text: string, keepNewlines = false): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this finds.
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) =>
    keepNewlines && c === '\n' ? c : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => escapeControl(String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (c ?? '').padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const ago = (ms: number) => (ms < 1000 ? `${ms} ms ago` : `${(ms / 1000).toFixed(1)} s ago`);

/** `stagectl status` for people: nodes, stages, subscriptions across hosts, inboxes. */
export function renderStatus(status: FabricStatus & { readonly tasks?: readonly TaskCount[] }): string {
  if (status.nodes.length === 0) return `no node of namespace "${escapeControl(status.namespace)}" has published a status\n`;
  const nodes = table(
    ['NODE', 'STATUS', 'LAST BEAT', 'STAGES'],
    status.nodes.map((n) => [n.node, n.up ? 'up' : 'down', ago(n.lastBeatAgeMs), n.stages.map((s) => s.name).join(', ')]),
  );
  const stages = table(
    ['STAGE', 'NODE', 'KIND', 'IN', 'OUT', 'BUFFER', 'MAILBOX'],
    status.nodes.flatMap((n) =>
      n.stages.map((s) => [
        s.name,
        n.node,
        s.kind,
        s.eventsIn,
        s.eventsOut,
        s.kind === 'consumer' ? '-' : s.bufferCapacity < 0 ? `${s.bufferLength}` : `${s.bufferLength}/${s.bufferCapacity}`,
        s.mailbox,
      ]),
    ),
  );
  const subscriptions = table(
    ['PRODUCER', 'CONSUMER', 'ASKED', 'SENT', 'OUTSTANDING DEMAND'],
    status.subscriptions.map((s) => [s.producer, s.consumer, s.asked, s.sent, s.outstandingDemand]),
  );
  const inboxes = table(
    ['INBOX', 'ENTRIES', 'PENDING'],
    status.inboxes.map((i) => [i.inbox, i.entries, i.pending]),
  );
  const tasks =
    status.tasks === undefined
      ? ''
      : `\n${table(
          ['QUEUE', 'STATE', 'TASKS'],
          status.tasks.map((t) => [t.queue, t.state, t.count]),
        )}\n`;
  return `${nodes}\n\n${stages}\n\n${subscriptions}\n\n${inboxes}\n${tasks}`;
}
