/**
 * Cancelling a task that runs: the store ends it as `cancelled` at once, so
 * the claim of the run no longer holds. The node running it learns so at
 * its next lease extension (every third of leaseMs), aborts the run's
 * signal and writes no outcome: the same path as a lost lease, so it works
 * on whichever node runs the task, with nothing more on the wire.
 */
export interface CancelRunningStore {
  /** Running tasks to cancelled; returns the ids changed (waiting ones are `cancel`'s). */
  cancelRunning(ids: readonly string[]): Promise<string[]>;
}
