import type { FabricStatus } from '@stagefabric/fabric';

type Stage = FabricStatus['nodes'][number]['stages'][number];

function stage(name: string, kind: string, eventsIn: number, downstream: Stage['downstream'] = []): Stage {
  return { name, kind, eventsIn, eventsOut: eventsIn, mailbox: 0, bufferLength: 0, bufferCapacity: 10_000, downstream, upstream: [] };
}

/**
 * A fabric status snapshot at time `at`, as nodes publish it: a producer on a,
 * a producer_consumer on b, a consumer on c, with `eventsIn` handled so far and
 * the given entries waiting in each inbox.
 */
export function statusSample(at: number, eventsIn: number, inboxes: Record<string, number>, doubleDownstream: Stage['downstream']) {
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
