import { describeValue } from '@stagefabric/runtime';
import type { NodeStatus } from './fabric-node.js';
import { FabricSecret } from './fabric-secret.js';
import { decodeHeartbeat, isRefused } from './heartbeat.js';
import { checkName } from './names.js';
import { openRedis, safeRedisError } from './redis-connection.js';
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
  /** Status entries that could not be read, each with why: they are left out of the rest. */
  readonly malformed: readonly { readonly node: string; readonly problem: string }[];
}

export interface ReadFabricStatusOptions {
  /** The fabric's shared secret: a node is shown up only while it beats with a heartbeat signed with it. */
  readonly secret?: string | undefined;
  /** Longest the whole read may take. Default 10 000 ms. */
  readonly timeoutMs?: number;
}

const MAX_STAGES = 10_000;

/** Checks one published snapshot; returns why it is not a NodeStatus of `node`, or the snapshot. */
function checkSnapshot(node: string, text: string): NodeStatus | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `not JSON (${(error as Error).message})`;
  }
  const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const isCount = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!isMap(value)) return 'not a map';
  if (value.node !== node) return `names node ${describeValue(value.node, 60)}`;
  if (typeof value.incarnation !== 'string' || !isCount(value.at)) return 'no incarnation or time';
  if (!Array.isArray(value.stages) || value.stages.length > MAX_STAGES) return 'stages is not a list';
  for (const [i, st] of value.stages.entries()) {
    if (!isMap(st) || typeof st.name !== 'string' || typeof st.kind !== 'string') return `stages[${i}] has no name or kind`;
    for (const f of ['eventsIn', 'eventsOut', 'mailbox', 'bufferLength', 'bufferCapacity'])
      if (!isCount(st[f])) return `stages[${i}].${f} is not a number`;
    if (!Array.isArray(st.downstream) || !Array.isArray(st.upstream)) return `stages[${i}] has no downstream or upstream list`;
    for (const d of st.downstream)
      if (!isMap(d) || typeof d.consumer !== 'string' || !isCount(d.asked) || !isCount(d.sent))
        return `stages[${i}].downstream is malformed`;
    for (const u of st.upstream)
      if (!isMap(u) || typeof u.producer !== 'string' || !isCount(u.pending)) return `stages[${i}].upstream is malformed`;
  }
  return value as unknown as NodeStatus;
}

/**
 * Reads what every node of a fabric last published, which of them beat now,
 * and their inboxes. Nothing read is trusted: a snapshot that is not one is
 * named in `malformed` and left out.
 */
export async function readFabricStatus(url: string, namespace: string, options: ReadFabricStatusOptions = {}): Promise<FabricStatus> {
  checkName('namespace', namespace);
  const keys = redisKeys(namespace);
  const secret = options.secret === undefined || options.secret === '' ? undefined : new FabricSecret(options.secret, namespace);
  const redis = openRedis(url, {
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
    lazyConnect: true,
    commandTimeout: options.timeoutMs ?? 10_000,
  });
  let lastError: Error | undefined;
  redis.on('error', (error: Error) => {
    lastError = error;
  });
  try {
    await redis.connect();
    const now = Date.now();
    const malformed: { node: string; problem: string }[] = [];
    let names: string[] = [];
    try {
      names = (await redis.zrangebyscore(keys.nodes, now - 86_400_000, '+inf')).sort();
    } catch (error) {
      // The registry overwritten with something else (WRONGTYPE): say so, and show what can be shown, nothing here.
      if (!/WRONGTYPE/.test((error as Error).message)) throw error;
      malformed.push({ node: '(the node registry)', problem: `${keys.nodes} is not a sorted set` });
    }
    const snapshots = names.length === 0 ? [] : await redis.mget(...names.map((n) => keys.status(n)));
    const statuses: NodeStatus[] = [];
    names.forEach((node, i) => {
      const text = snapshots[i];
      if (text === null || text === undefined) return;
      const checked = checkSnapshot(node, text);
      if (typeof checked === 'string') malformed.push({ node, problem: checked });
      else statuses.push(checked);
    });
    const beats = statuses.length === 0 ? [] : await redis.mget(...statuses.map((s) => keys.heartbeat(s.node)));
    const nodes = statuses.map((s, i) => {
      const beat = beats[i];
      const reading = typeof beat === 'string' ? decodeHeartbeat(s.node, beat, secret) : undefined;
      const up = reading !== undefined && !isRefused(reading) && reading.incarnation === s.incarnation;
      return { ...s, up, lastBeatAgeMs: now - s.at };
    });
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
        pending: pendingError === null && Array.isArray(pending) ? Number(pending[0] ?? 0) : 0,
      };
    });
    return { namespace, nodes, subscriptions, inboxes, malformed };
  } catch (error) {
    // The connection's own error says more than "Connection is closed."; neither carries a credential once made safe.
    throw safeRedisError(lastError !== undefined && /closed|ECONN|timed out/i.test((error as Error).message) ? lastError : error, url);
  } finally {
    redis.disconnect();
  }
}
