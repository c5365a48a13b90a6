import { FabricError } from '@stagefabric/runtime';
import { Packr } from 'msgpackr';
import { checkWireMessage, type WireMessage } from './wire.js';

// Records off: every map decodes as a plain object, whoever encoded it.
const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeMessage(message: WireMessage): Buffer {
  return packr.pack(message);
}

/** Decodes and checks one entry; throws with what was wrong (truncated bytes, wrong types, oversized batch). */
export function decodeMessage(bytes: Buffer, maxEvents: number): WireMessage {
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (error) {
    throw new FabricError('SF_BAD_WIRE_MESSAGE', `undecodable msgpack (${bytes.length} bytes): ${(error as Error).message}`);
  }
  return checkWireMessage(value, maxEvents);
}
