import { isFabricError } from '@stagefabric/runtime';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeEntries, encodeMessage } from '../src/codec.js';

const packr = new Packr({ useRecords: false, moreTypes: false });
const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const events = { t: 'events', key: 'runner@b>tasks@a', epoch: 1, seq: 0, events: [{ n: 1 }, { n: 2 }] } as const;

describe('trace context on the wire (events tp)', () => {
  it('carries a W3C traceparent with a batch, also on each part of a batch split to fit entries', () => {
    expect(decodeMessage(encodeMessage({ ...events, tp: TP }), 100)).toEqual({ ...events, tp: TP });
    const big = { ...events, events: Array.from({ length: 8 }, (_, n) => ({ n, pad: 'x'.repeat(200) })), tp: TP };
    const parts = encodeEntries(big, 1000);
    expect(parts.length).toBeGreaterThan(1);
    for (const part of parts) expect(decodeMessage(part.bytes, 100)).toMatchObject({ t: 'events', tp: TP });
  });

  it('accepts a batch without it, as senders without tracing and older ones write it', () => {
    const decoded = decodeMessage(encodeMessage(events), 100);
    expect(decoded).toEqual(events);
    expect('tp' in decoded).toBe(false);
  });

  it.each([
    ['not a string', 42],
    ['empty', ''],
    ['truncated', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7'],
    ['upper-case hex', TP.toUpperCase()],
    ['an unknown version', `ff${TP.slice(2)}`],
    ['an all-zero trace id', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'],
    ['an all-zero span id', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01'],
    ['with trailing text', `${TP} extra`],
    ['a map', { traceparent: TP }],
  ])('refuses a tp that is %s, naming the field', (_what, tp) => {
    let error: unknown;
    try {
      decodeMessage(packr.pack({ ...events, tp }), 100);
    } catch (e) {
      error = e;
    }
    expect(isFabricError(error, 'SF_BAD_WIRE_MESSAGE')).toBe(true);
    expect((error as Error).message).toMatch(/^malformed wire message: events tp must be a W3C traceparent/);
  });
});
