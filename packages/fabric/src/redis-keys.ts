/** Every Redis key the fabric uses, built here and nowhere else. */
export interface RedisKeys {
  inbox(instance: string): string;
  heartbeat(node: string): string;
  /** A node's last status snapshot (JSON), kept a day after it stops beating, for `stagectl status`. */
  status(node: string): string;
  /** Pattern matching every status key of the namespace. */
  readonly statusPattern: string;
  /** Sorted set of the namespace's node names by last beat (ms): how `stagectl status` finds nodes without SCAN. */
  readonly nodes: string;
  readonly deadLetters: string;
}

/** `namespace` separates fabrics sharing one Redis (and tests from each other). */
export function redisKeys(namespace: string): RedisKeys {
  const base = `sf:${namespace}`;
  return {
    inbox: (instance) => `${base}:inbox:${instance}`,
    heartbeat: (node) => `${base}:hb:${node}`,
    status: (node) => `${base}:status:${node}`,
    statusPattern: `${base}:status:*`,
    nodes: `${base}:nodes`,
    deadLetters: `${base}:dead`,
  };
}

/** The consumer group every inbox is read through; its one consumer is the node hosting the instance. */
export const INBOX_GROUP = 'sf';
