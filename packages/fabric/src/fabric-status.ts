import { Redis } from 'ioredis';
import type { NodeStatus } from './fabric-node.js';
import { INBOX_GROUP, redisKeys } from './redis-keys.js';

export interface FabricStatus {
  readonly namespace: string;
  readonly nodes: readonly (NodeStatus & { readonly up: boolean; readonly lastBeatAgeMs: number })[];
  /** Consumer -> producer links, as their producers see them, named `stage@node`. */
  readonly subscriptions: readonly {
    readonly producer: string;
    readonly consumer: string;
    readonly asked: number;
    readonly sent: number;
    readonly outstandingDemand: number;
  }[];
  readonly inboxes: readonly { readonly inbox: string; readonly entries: number; readonly pending: number }[];
}

/** Reads what every node of a fabric last published, which of them beat now, and their inboxes. */
export async function readFabricStatus(url: string, namespace: string): Promise<FabricStatus> {
  const keys = redisKeys(namespace);
  const redis = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null, lazyConnect: true });
  try {
    await redis.connect();
    const statusKeys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', keys.statusPattern, 'COUNT', 500);
      cursor = next;
      statusKeys.push(...found);
    } while (cursor !== '0');
    const snapshots = statusKeys.length === 0 ? [] : await redis.mget(...statusKeys);
    const statuses = snapshots.filter((s): s is string => s !== null).map((s) => JSON.parse(s) as NodeStatus);
    statuses.sort((a, b) => a.node.localeCompare(b.node));
    const beats = statuses.length === 0 ? [] : await redis.mget(...statuses.map((s) => keys.heartbeat(s.node)));
    const now = Date.now();
    const nodes = statuses.map((s, i) => ({ ...s, up: beats[i] === s.incarnation, lastBeatAgeMs: now - s.at }));
    const qualify = (name: string, node: string) => (name.includes('@') ? name : `${name}@${node}`);
    const subscriptions = nodes.flatMap((n) =>
      n.stages.flatMap((stage) =>
        stage.downstream.map((d) => ({
          producer: `${stage.name}@${n.node}`,
          consumer: qualify(d.consumer, n.node),
          asked: d.asked,
          sent: d.sent,
          outstandingDemand: d.asked - d.sent,
        })),
      ),
    );
    const inboxNames = nodes.flatMap((n) => n.stages.map((s) => `${s.name}@${n.node}`));
    const batch = redis.pipeline();
    for (const inbox of inboxNames) batch.xlen(keys.inbox(inbox)).xpending(keys.inbox(inbox), INBOX_GROUP);
    const replies = inboxNames.length === 0 ? [] : ((await batch.exec()) ?? []);
    const inboxes = inboxNames.map((inbox, i) => {
      const [lenError, len] = replies[2 * i] ?? [null, 0];
      const [pendingError, pending] = replies[2 * i + 1] ?? [null, [0]];
      return {
        inbox,
        entries: lenError === null ? Number(len) : 0,
        pending: pendingError === null ? Number((pending as unknown[])[0] ?? 0) : 0,
      };
    });
    return { namespace, nodes, subscriptions, inboxes };
  } finally {
    redis.disconnect();
  }
}
