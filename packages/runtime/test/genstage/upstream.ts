/**
 * Helpers for the suites ported from GenStage's own tests
 * (github.com/elixir-lang/gen_stage at 72198f86c8cd4ba149e8ee2ad80ab442d6d106be, v1.3.2 + docs).
 * Each test's name starts with the upstream test's name; the file header names
 * the upstream file.
 */
import type { DispatcherHost, StageRef } from '../../src/index.js';

/** The commit the suites were ported from. */
export const UPSTREAM_COMMIT = '72198f86c8cd4ba149e8ee2ad80ab442d6d106be';

/** What a dispatcher did, in order: GenStage's tests read these from the test process's mailbox. */
export interface HostLog<T> {
  readonly host: DispatcherHost<T>;
  /** `{:"$gen_consumer", {_, ref}, events}` */
  readonly sent: [number, T[]][];
  /** `{:"$gen_producer", {_, ref}, {:ask, n}}` sent to itself */
  readonly reasks: [number, number][];
  /** info messages sent to itself */
  readonly infos: unknown[];
  readonly overflows: { partition: string | number; dropped: number; capacity: number }[];
  /** Takes what was sent so far (assert_received drains the mailbox). */
  takeSent(): [number, T[]][];
}

export function hostLog<T>(): HostLog<T> {
  const sent: [number, T[]][] = [];
  const reasks: [number, number][] = [];
  const infos: unknown[] = [];
  const overflows: { partition: string | number; dropped: number; capacity: number }[] = [];
  return {
    sent,
    reasks,
    infos,
    overflows,
    host: {
      send: (id, events) => void sent.push([id, events]),
      reask: (id, count) => void reasks.push([id, count]),
      info: (message) => void infos.push(message),
      overflow: (partition, dropped, capacity) => void overflows.push({ partition, dropped, capacity }),
    },
    takeSent: () => sent.splice(0),
  };
}

/** A consumer as a dispatcher sees it: GenStage's pid. */
export function consumerRef(id: number): StageRef {
  return { id, name: undefined, label: `consumer#${id}` };
}
