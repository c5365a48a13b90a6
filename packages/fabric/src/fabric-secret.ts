import { createHmac, timingSafeEqual } from 'node:crypto';
import { FabricError } from '@stagefabric/runtime';

/** The environment variable agents and stagectl read the shared secret from. */
export const SECRET_ENV = 'STAGEFABRIC_SECRET';
/** Shorter secrets are refused: an HMAC key should not be guessable. */
export const MIN_SECRET_CHARS = 16;

/**
 * A secret shared by the nodes of one fabric: each inbox entry carries an
 * HMAC-SHA256 of its bytes (and of the namespace and inbox it was written
 * to, so it cannot be moved), each heartbeat one of its fields. A node with
 * a secret dead-letters every entry whose MAC is missing or wrong and takes
 * no heartbeat it cannot verify. It authenticates writers; it does not hide
 * what they wrote, and it cannot stop an entry being written again by
 * someone who read it: that is what Redis ACLs are for.
 */
export class FabricSecret {
  private readonly key: Buffer;

  constructor(
    secret: string,
    private readonly namespace: string,
  ) {
    if (secret.length < MIN_SECRET_CHARS) {
      throw new FabricError('SF_BAD_OPTION', `${SECRET_ENV}: must be at least ${MIN_SECRET_CHARS} characters, got ${secret.length}`);
    }
    this.key = Buffer.from(secret, 'utf8');
  }

  /** The MAC of an entry written to `inbox`. */
  signEntry(inbox: string, bytes: Buffer): Buffer {
    return createHmac('sha256', this.key).update(`entry\0${this.namespace}\0${inbox}\0`).update(bytes).digest();
  }

  verifyEntry(inbox: string, bytes: Buffer, mac: Buffer | undefined): boolean {
    if (mac === undefined || mac.length !== 32) return false;
    return timingSafeEqual(this.signEntry(inbox, bytes), mac);
  }

  /** The MAC of a heartbeat's fields, as text. */
  signBeat(fields: string): string {
    return createHmac('sha256', this.key).update(`beat\0${this.namespace}\0${fields}`).digest('base64url');
  }

  verifyBeat(fields: string, mac: unknown): boolean {
    if (typeof mac !== 'string') return false;
    const expected = Buffer.from(this.signBeat(fields));
    const given = Buffer.from(mac);
    return given.length === expected.length && timingSafeEqual(expected, given);
  }
}
