import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import type { DeadLetter, InboundEntry, Transport, WireMessage } from '../src/index.js';

export interface TransportHarness {
  /** A transport for `node`; every transport made by one harness shares one fabric. */
  make(node: string): Transport;
  /** Writes bytes into an inbox as a foreign writer would. */
  writeRaw(inbox: string, bytes: Buffer): Promise<void>;
  /** Moves the fabric's time on, where it runs on a fake clock; without it, heartbeats expire in real time. */
  elapse?(ms: number): void;
}

const ask = (key: string, hwm: number): WireMessage => ({ t: 'ask', key, epoch: 1, hwm });

/** The contract every transport keeps; run against each implementation. */
export function transportConformance(name: string, harness: () => TransportHarness): void {
  describe(`transport conformance: ${name}`, () => {
    const open: Transport[] = [];
    const make = (h: TransportHarness, node: string) => {
      const t = h.make(node);
      open.push(t);
      return t;
    };
    afterEach(async () => {
      for (const t of open.splice(0)) await t.close();
    });

    it('delivers messages to an inbox in the order they were sent, decoded', async () => {
      const h = harness();
      const inbox = `p-${randomUUID().slice(0, 6)}@a`;
      const reader = make(h, 'a');
      const got: InboundEntry[] = [];
      await reader.open([inbox], (e) => got.push(e));
      const writer = make(h, 'b');
      for (let i = 1; i <= 50; i++) writer.send(inbox, ask('k', i));
      writer.send(inbox, { t: 'events', key: 'k', epoch: 1, seq: 0, events: [{ id: 1, text: 'é' }, [1, 2], null] });
      await waitFor(() => got.length === 51, '51 entries');
      expect(got.slice(0, 50).map((e) => (e.message as { hwm: number }).hwm)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(got[50]?.message).toEqual({ t: 'events', key: 'k', epoch: 1, seq: 0, events: [{ id: 1, text: 'é' }, [1, 2], null] });
      expect(got.every((e) => e.inbox === inbox)).toBe(true);
    });

    it('an entry stays until acknowledged; a restarted reader gets the unacknowledged ones again, before new ones', async () => {
      const h = harness();
      const inbox = `c-${randomUUID().slice(0, 6)}@a`;
      const writer = make(h, 'b');
      const first = make(h, 'a');
      const got: InboundEntry[] = [];
      await first.open([inbox], (e) => got.push(e));
      for (let i = 1; i <= 4; i++) writer.send(inbox, ask('k', i));
      await waitFor(() => got.length === 4, 'four entries');
      first.ack(inbox, [got[0]?.entryId as string, got[1]?.entryId as string]);
      await first.close();
      // Acknowledged entries leave the inbox; the others remain.
      await expect.poll(() => writer.inboxLength(inbox)).toBe(2);
      writer.send(inbox, ask('k', 5));
      const again: InboundEntry[] = [];
      const second = make(h, 'a');
      await second.open([inbox], (e) => again.push(e));
      await waitFor(() => again.length === 3, 'three entries after the restart');
      expect(again.map((e) => (e.message as { hwm: number }).hwm)).toEqual([3, 4, 5]);
    });

    it('a malformed entry is dead-lettered with its reason and acknowledged; the reader goes on', async () => {
      const h = harness();
      const inbox = `g-${randomUUID().slice(0, 6)}@a`;
      const reader = make(h, 'a');
      const got: InboundEntry[] = [];
      const dead: DeadLetter[] = [];
      reader.on('dead-letter', (d) => dead.push(d));
      await reader.open([inbox], (e) => got.push(e));
      await h.writeRaw(inbox, Buffer.from([0xc1, 0x00, 0xff]));
      make(h, 'b').send(inbox, ask('k', 1));
      await waitFor(() => dead.length === 1 && got.length === 1, 'one dead letter and one good entry');
      expect(dead[0]?.inbox).toBe(inbox);
      expect(dead[0]?.reason).toMatch(/msgpack|malformed/);
      await expect.poll(() => reader.inboxLength(inbox)).toBe(1);
    });

    it('heartbeats: a node is alive with its incarnation until its beat expires', async () => {
      const h = harness();
      const t = make(h, 'a');
      const node = `n-${randomUUID().slice(0, 6)}`;
      await t.beat(node, 'inc-1', 200);
      expect(await t.alive([node, 'nobody'])).toEqual(new Map([[node, 'inc-1']]));
      await t.beat(node, 'inc-2', 200);
      expect((await t.alive([node])).get(node)).toBe('inc-2');
      if (h.elapse === undefined) await expect.poll(async () => (await t.alive([node])).size, { timeout: 3000 }).toBe(0);
      else {
        h.elapse(199);
        expect((await t.alive([node])).size).toBe(1);
        h.elapse(1);
        expect((await t.alive([node])).size).toBe(0);
      }
    });
  });
}
