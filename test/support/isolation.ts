import { randomUUID } from 'node:crypto';

/** A Redis key prefix of one test's own, so tests sharing a server never see each other's keys. */
export function uniquePrefix(label: string): string {
  return `sf-test-${label}-${randomUUID().slice(0, 8)}:`;
}
