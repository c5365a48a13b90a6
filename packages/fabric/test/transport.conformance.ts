import { randomUUID } from 'node:crypto';
import { Packr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../../../test/support/wait-for.js';
import { type DeadLetter, type InboundEntry, isRefused, type SendFailure, type Transport, type WireMessage } from '../src/index.js';

export interface TransportOptions {
  readonly secret?: string;
  readonly maxEntryBytes?: number;
}

export interface TransportHarness {
  /** A transport for `node`; every transport made by one harness shares one fabric. */
  make(node: string, options?: TransportOptions): Transport;
  /** Writes bytes into an inbox as a foreign writer would (no MAC). */
  writeRaw(inbox: string, bytes: Buffer): Promise<void>;
  /** Moves the fabric's time on, where it runs on a fake clock; without it, heartbeats expire in real time. */
  elapse?(ms: number): void;
  /** Writes a node's heartbeat key as a foreign writer would. */
  writeHeartbeat(node: string, value: string, ttlMs: number): Promise<void>;
}

const KEY = 'c@b>p@a';
const ask = (hwm: number, key = KEY): WireMessage => ({ t: 'ask', key, epoch: 1, hwm });
const SECRET = 'a-secret-of-the-fabric-0123456789';
const packr = new Packr({ useRecords: false });

/** The contract every transport keeps; run against each implementation. */
export function transportConformance(name: string, harness: () => TransportHarness): void {
  describe(`transport conformance: ${name}`, () => {
    const open: Transport[] = [];
    const make = (h: TransportHarness, node: string, options?: TransportOptions) => {
      const t = h.make(node, options);
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
      for (let i = 1; i <= 50; i++) writer.send(inbox, ask(i));
      writer.send(inbox, { t: 'events', key: KEY, epoch: 1, seq: 0, events: [{ id: 1, text: 'é' }, [1, 2], null] });
      await waitFor(() => got.length === 51, '51 entries');
      expect(got.slice(0, 50).map((e) => (e.message as { hwm: number }).hwm)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(got[50]?.message).toEqual({ t: 'events', key: KEY, epoch: 1, seq: 0, events: [{ id: 1, text: 'é' }, [1, 2], null] });
      expect(got.every((e) => e.inbox === inbox && e.bytes > 0)).toBe(true);
    });

    it('an entry stays until acknowledged; a restarted reader gets the unacknowledged ones again, before new ones', async () => {
      const h = harness();
      const inbox = `c-${randomUUID().slice(0, 6)}@a`;
      const writer = make(h, 'b');
      const first = make(h, 'a');
      const got: InboundEntry[] = [];
      await first.open([inbox], (e) => got.push(e));
      for (let i = 1; i <= 4; i++) writer.send(inbox, ask(i));
      await waitFor(() => got.length === 4, 'four entries');
      first.ack(inbox, [got[0]?.entryId as string, got[1]?.entryId as string]);
      await first.close();
      // Acknowledged entries leave the inbox; the others remain.
      await expect.poll(() => writer.inboxLength(inbox)).toBe(2);
      writer.send(inbox, ask(5));
      const again: InboundEntry[] = [];
      const second = make(h, 'a');
      await second.open([inbox], (e) => again.push(e));
      await waitFor(() => again.length === 3, 'three entries after the restart');
      expect(again.map((e) => (e.message as { hwm: number }).hwm)).toEqual([3, 4, 5]);
    });

    it('malformed entries are dead-lettered with their reason and acknowledged; the reader goes on', async () => {
      const h = harness();
      const inbox = `g-${randomUUID().slice(0, 6)}@a`;
      const reader = make(h, 'a');
      const got: InboundEntry[] = [];
      const dead: DeadLetter[] = [];
      reader.on('dead-letter', (d) => dead.push(d));
      await reader.open([inbox], (e) => got.push(e));
      await h.writeRaw(inbox, Buffer.from([0xc1, 0x00, 0xff]));
      // Valid msgpack, wrong values: an ask with a key that is no subscription key, a cancel with a reason of the wrong shape.
      await h.writeRaw(inbox, packr.pack({ t: 'ask', key: 'k', epoch: 1, hwm: 1 }));
      await h.writeRaw(inbox, packr.pack({ t: 'cancel', key: KEY, epoch: 1, from: 'consumer', kind: 'cancel', reason: null }));
      await h.writeRaw(
        inbox,
        packr.pack({ t: 'subscribe', key: KEY, epoch: 1, consumer: 'c@b', incarnation: 'i', options: { maxDemand: 1e12 } }),
      );
      make(h, 'b').send(inbox, ask(1));
      await waitFor(() => dead.length === 4 && got.length === 1, 'four dead letters and one good entry');
      expect(dead.map((d) => [d.inbox, d.kind])).toEqual(Array.from({ length: 4 }, () => [inbox, 'malformed']));
      expect(dead[0]?.reason).toMatch(/msgpack|malformed/);
      expect(dead[1]?.reason).toMatch(/key must be a subscription key/);
      expect(dead[2]?.reason).toMatch(/cancel reason/);
      expect(dead[3]?.reason).toMatch(/maxDemand must be an integer from 1 to 10000000/);
      await expect.poll(() => reader.inboxLength(inbox)).toBe(1);
    });

    it('an entry whose handling throws is dead-lettered as failed; the next one is handled', async () => {
      const h = harness();
      const inbox = `f-${randomUUID().slice(0, 6)}@a`;
      const reader = make(h, 'a');
      const got: number[] = [];
      const dead: DeadLetter[] = [];
      reader.on('dead-letter', (d) => dead.push(d));
      await reader.open([inbox], (e) => {
        const hwm = (e.message as { hwm: number }).hwm;
        if (hwm === 1) throw new Error('boom');
        got.push(hwm);
        reader.ack(inbox, [e.entryId]);
      });
      const writer = make(h, 'b');
      writer.send(inbox, ask(1));
      writer.send(inbox, ask(2));
      await waitFor(() => dead.length === 1 && got.length === 1, 'one failure and one handled');
      expect(dead[0]).toMatchObject({ kind: 'failed', reason: 'handling it failed: boom' });
      await expect.poll(() => reader.inboxLength(inbox)).toBe(0);
    });

    it('an entry the fabric refuses is moved to the dead letters with deadLetter()', async () => {
      const h = harness();
      const inbox = `r-${randomUUID().slice(0, 6)}@a`;
      const reader = make(h, 'a');
      const dead: DeadLetter[] = [];
      reader.on('dead-letter', (d) => dead.push(d));
      await reader.open([inbox], (e) => reader.deadLetter(e, 'refused', 'beyond demand'));
      make(h, 'b').send(inbox, ask(7));
      await waitFor(() => dead.length === 1, 'the refusal');
      expect(dead[0]).toMatchObject({ inbox, kind: 'refused', reason: 'beyond demand' });
      await expect.poll(() => reader.inboxLength(inbox)).toBe(0);
    });

    it('a batch larger than an entry may be is sent as several, in order; one event too large is a send failure', async () => {
      const h = harness();
      const inbox = `s-${randomUUID().slice(0, 6)}@a`;
      const reader = make(h, 'a', { maxEntryBytes: 4096 });
      const got: InboundEntry[] = [];
      const dead: DeadLetter[] = [];
      reader.on('dead-letter', (d) => dead.push(d));
      await reader.open([inbox], (e) => got.push(e));
      const writer = make(h, 'b', { maxEntryBytes: 4096 });
      const failed: SendFailure[] = [];
      writer.on('send-failed', (f) => failed.push(f));
      const events = Array.from({ length: 100 }, (_, i) => `${i}:${'x'.repeat(200)}`);
      writer.send(inbox, { t: 'events', key: KEY, epoch: 1, seq: 10, events });
      writer.send(inbox, { t: 'events', key: KEY, epoch: 1, seq: 110, events: ['y'.repeat(5000)] });
      await waitFor(() => got.reduce((n, e) => n + (e.message.t === 'events' ? e.message.events.length : 0), 0) === 100, '100 events');
      expect(got.length).toBeGreaterThan(1);
      let seq = 10;
      for (const e of got) {
        if (e.message.t !== 'events') throw new Error('not events');
        expect(e.message.seq).toBe(seq);
        expect(e.bytes).toBeLessThanOrEqual(4096);
        seq += e.message.events.length;
      }
      expect(got.flatMap((e) => (e.message.t === 'events' ? e.message.events : []))).toEqual(events);
      expect(failed).toHaveLength(1);
      expect(failed[0]?.error.message).toMatch(/exceeds the entry limit of 4096 bytes/);
      // Written by someone else, an entry past the limit is dead-lettered undecoded.
      await h.writeRaw(inbox, packr.pack({ t: 'events', key: KEY, epoch: 1, seq: 0, events: ['z'.repeat(5000)] }));
      await waitFor(() => dead.length === 1, 'the oversized entry');
      expect(dead[0]).toMatchObject({ kind: 'oversized' });
      expect(dead[0]?.reason).toMatch(/exceeds the limit of 4096/);
    });

    it('with a secret, only entries signed with it are delivered; others are dead-lettered as unauthentic', async () => {
      const h = harness();
      const inbox = `a-${randomUUID().slice(0, 6)}@a`;
      const reader = make(h, 'a', { secret: SECRET });
      const got: InboundEntry[] = [];
      const dead: DeadLetter[] = [];
      reader.on('dead-letter', (d) => dead.push(d));
      await reader.open([inbox], (e) => got.push(e));
      make(h, 'b', { secret: SECRET }).send(inbox, ask(1));
      make(h, 'c', { secret: `${SECRET}-other` }).send(inbox, ask(2));
      make(h, 'd').send(inbox, ask(3));
      await h.writeRaw(inbox, packr.pack(ask(4)));
      await waitFor(() => got.length === 1 && dead.length === 3, 'one delivered, three refused');
      expect(got[0]?.message).toMatchObject({ hwm: 1 });
      expect(dead.map((d) => d.kind)).toEqual(['unauthentic', 'unauthentic', 'unauthentic']);
    });

    it('heartbeats: a node is alive with its incarnation until its beat expires', async () => {
      const h = harness();
      const t = make(h, 'a');
      const node = `n-${randomUUID().slice(0, 6)}`;
      expect(await t.beat(node, 'inc-1', 200)).toBe(true);
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

    it('heartbeats: a beat only where none is; each reading says incarnation and start, or why it was refused', async () => {
      const h = harness();
      const t = make(h, 'a');
      const node = `n-${randomUUID().slice(0, 6)}`;
      expect(await t.beat(node, 'inc-1', 5000, undefined, { onlyIfAbsent: true })).toBe(true);
      expect(await t.beat(node, 'inc-2', 5000, undefined, { onlyIfAbsent: true })).toBe(false);
      const reading = (await t.heartbeats([node])).get(node);
      expect(reading).toMatchObject({ node, incarnation: 'inc-1', ttlMs: 5000 });
      const other = `o-${randomUUID().slice(0, 6)}`;
      await h.writeHeartbeat(other, 'not a beat', 5000);
      const refused = (await t.heartbeats([other])).get(other);
      expect(refused !== undefined && isRefused(refused)).toBe(true);
      expect(await t.alive([other])).toEqual(new Map());
      // A node's beat copied under another node's name does not pass.
      await h.writeHeartbeat(other, JSON.stringify(reading), 5000);
      const copied = (await t.heartbeats([other])).get(other);
      expect(copied !== undefined && isRefused(copied) && copied.refused).toMatch(/another node/);
      // With a secret, only beats signed with it pass.
      const signed = make(h, 's', { secret: SECRET });
      await signed.beat(node, 'inc-3', 5000);
      expect((await signed.alive([node])).get(node)).toBe('inc-3');
      await t.beat(node, 'inc-4', 5000);
      const unsigned = (await signed.heartbeats([node])).get(node);
      expect(unsigned !== undefined && isRefused(unsigned) && unsigned.unauthentic).toBe(true);
    });
  });
}
