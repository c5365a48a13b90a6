import { randomUUID } from 'node:crypto';

/** A Redis key prefix of one test's own, so tests sharing a server never see each other's keys. */
export function uniquePrefix(label: string): string {
  return `sf-test-${label}-${randomUUID().slice(0, 8)}:`;
}

export interface WaitForOptions {
  /** What is awaited, named in the error on timeout. */
  readonly what: string;
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
}

/** Polls `condition` until it holds; throws naming `what` when the deadline passes first. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  { what, timeoutMs = 10_000, intervalMs = 20 }: WaitForOptions,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
