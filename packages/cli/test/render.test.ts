import type { FabricStatus } from '@stagefabric/fabric';
import { fabricRates } from '@stagefabric/node-agent';
import { describe, expect, it } from 'vitest';
import { renderStatus } from '../src/status.js';
import { renderTop } from '../src/top.js';

type Stage = FabricStatus['nodes'][number]['stages'][number];

function stage(name: string, kind: string, eventsIn: number, downstream: Stage['downstream'] = []): Stage {
  return { name, kind, eventsIn, eventsOut: eventsIn, mailbox: 0, bufferLength: 0, bufferCapacity: 10_000, downstream, upstream: [] };
}

/** A producer on a, a producer_consumer on b, a consumer on c; inbox entries per stage. */
function sample(at: number, eventsIn: number, inboxes: Record<string, number>, doubleDownstream: Stage['downstream']) {
  const node = (name: string, stages: Stage[]) => ({ node: name, incarnation: name, at, up: true, lastBeatAgeMs: 0, stages });
  const status: FabricStatus = {
    namespace: 't',
    nodes: [
      node('a', [stage('counter', 'producer', 0, [{ consumer: 'double@b', asked: 1000, sent: 1000 }])]),
      node('b', [stage('double', 'producer_consumer', eventsIn, doubleDownstream)]),
      node('c', [stage('recorder', 'consumer', eventsIn)]),
    ],
    subscriptions: [{ producer: 'counter@a', consumer: 'double@b', asked: 1000, sent: eventsIn, outstandingDemand: 1000 - eventsIn }],
    inboxes: Object.entries(inboxes).map(([inbox, entries]) => ({ inbox, entries, pending: entries })),
    malformed: [],
  };
  return { at, status };
}

describe('stagectl top and status print what nodes publish as text', () => {
  it('prints node and stage names with control characters escaped, in top and in status', () => {
    const evil = sample(0, 0, {}, []);
    const nodes = evil.status.nodes.map((n) => ({
      ...n,
      node: `${n.node}\u001b[2J`,
      stages: n.stages.map((st) => ({ ...st, name: `${st.name}\u0007` })),
    }));
    const status = { ...evil.status, nodes };
    const { stages } = fabricRates({ at: 0, status }, { at: 1000, status });
    for (const text of [renderTop(stages, undefined, 'ns\u001b]0;x'), renderStatus(status)]) {
      expect(text).toContain('a\\x1b[2J');
      expect(text).toContain('counter\\x07');
      // biome-ignore lint/suspicious/noControlCharactersInRegex: none may reach the terminal.
      expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
    }
  });
});
