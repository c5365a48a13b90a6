/** How long to wait before trying again: doubling from `baseMs`, never past `maxMs`. */
export interface BackoffBounds {
  readonly baseMs: number;
  readonly maxMs: number;
}

/**
 * The wait before try number `attempt` (0 for the first retry): base * 2^attempt,
 * capped. With `random` (full jitter), a uniform wait up to that, so many
 * clients failing together do not retry together.
 */
export function backoffMs(attempt: number, { baseMs, maxMs }: BackoffBounds, random?: () => number): number {
  // The exponent is bounded first: 2 ** 1100 is Infinity, and Infinity * 0 (a jitter of 0) is NaN.
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 52));
  return random === undefined ? ceiling : Math.floor(random() * ceiling);
}
