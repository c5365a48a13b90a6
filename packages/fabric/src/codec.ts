import { FabricError } from '@stagefabric/runtime';
import { Packr } from 'msgpackr';
import { checkWireMessage, type WireMessage } from './wire.js';

// Records off: every map decodes as a plain object, whoever encoded it.
const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeMessage(message: WireMessage): Buffer {
  return packr.pack(message);
}

/**
 * Encodes a message as one or more entries of at most `maxEntryBytes` each:
 * a batch of events too large for one entry is split, each part numbered
 * from its first event, so the receiver sees the same events in the same
 * order. One event larger than an entry may be cannot be sent: that throws.
 */
export function encodeEntries(message: WireMessage, maxEntryBytes: number): { readonly message: WireMessage; readonly bytes: Buffer }[] {
  const bytes = encodeMessage(message);
  if (bytes.length <= maxEntryBytes) return [{ message, bytes }];
  if (message.t !== 'events' || message.events.length === 1) {
    throw new FabricError(
      'SF_BAD_WIRE_MESSAGE',
      `a ${message.t} message of ${bytes.length} bytes${message.t === 'events' ? ' (one event)' : ''} exceeds the entry limit of ${maxEntryBytes} bytes`,
    );
  }
  const half = Math.ceil(message.events.length / 2);
  return [
    ...encodeEntries({ ...message, events: message.events.slice(0, half) }, maxEntryBytes),
    ...encodeEntries({ ...message, seq: message.seq + half, events: message.events.slice(half) }, maxEntryBytes),
  ];
}

/** Decodes and checks one entry; throws with what was wrong (truncated bytes, wrong types, oversized batch). */
export function decodeMessage(bytes: Buffer, maxEvents: number): WireMessage {
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (error) {
    throw new FabricError('SF_BAD_WIRE_MESSAGE', `undecodable msgpack (${bytes.length} bytes): ${(error as Error).message.slice(0, 200)}`);
  }
  return checkWireMessage(value, maxEvents);
}
