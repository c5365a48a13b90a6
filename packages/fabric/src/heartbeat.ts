import type { FabricSecret } from './fabric-secret.js';
import { isName } from './names.js';

/**
 * What a node's heartbeat key holds. It names the node (a beat copied to
 * another node's key does not pass), the incarnation beating and when that
 * incarnation started (a restart is a later start, so a stale or stray value
 * is never taken for one), when it beat and how long the beat lives.
 */
export interface Heartbeat {
  readonly node: string;
  readonly incarnation: string;
  readonly startedAtMs: number;
  readonly atMs: number;
  readonly ttlMs: number;
}

/** A heartbeat key whose value is not a beat this node can take: malformed, for another node, or not authentic. */
export interface RefusedHeartbeat {
  readonly refused: string;
  readonly unauthentic: boolean;
}

export type HeartbeatReading = Heartbeat | RefusedHeartbeat;

export function isRefused(reading: HeartbeatReading): reading is RefusedHeartbeat {
  return 'refused' in reading;
}

const fieldsOf = (b: Heartbeat) => `${b.node}\0${b.incarnation}\0${b.startedAtMs}\0${b.atMs}\0${b.ttlMs}`;

export function encodeHeartbeat(beat: Heartbeat, secret: FabricSecret | undefined): string {
  const { node, incarnation, startedAtMs, atMs, ttlMs } = beat;
  return JSON.stringify({
    node,
    incarnation,
    startedAtMs,
    atMs,
    ttlMs,
    ...(secret === undefined ? {} : { mac: secret.signBeat(fieldsOf(beat)) }),
  });
}

const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Reads the value of `node`'s heartbeat key; with a secret, only a beat it signed is taken. */
export function decodeHeartbeat(node: string, value: string, secret: FabricSecret | undefined): HeartbeatReading {
  const refuse = (refused: string, unauthentic = false): RefusedHeartbeat => ({ refused, unauthentic });
  if (value.length > 2048) return refuse(`a value of ${value.length} chars`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return refuse('not a heartbeat (not JSON)');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return refuse('not a heartbeat (not a map)');
  const b = parsed as Record<string, unknown>;
  if (b.node !== node || !isName(b.node)) return refuse(`a heartbeat of another node (${JSON.stringify(b.node)?.slice(0, 80)})`);
  if (typeof b.incarnation !== 'string' || b.incarnation.length === 0 || b.incarnation.length > 128) return refuse('no incarnation');
  if (!isTime(b.startedAtMs) || !isTime(b.atMs) || !isTime(b.ttlMs) || b.ttlMs === 0) return refuse('malformed times');
  const beat: Heartbeat = { node, incarnation: b.incarnation, startedAtMs: b.startedAtMs, atMs: b.atMs, ttlMs: b.ttlMs };
  if (secret !== undefined && !secret.verifyBeat(fieldsOf(beat), b.mac)) return refuse('not authentic (no valid MAC)', true);
  return beat;
}
