/**
 * Ported from GenStage's test/gen_stage/buffer_test.exs
 * (elixir-lang/gen_stage at 72198f86c8cd4ba149e8ee2ad80ab442d6d106be).
 *
 * GenStage.Buffer's temporary entries are EventBuffer's events, its
 * permanent entries (infos from sync_info/async_info) are markers:
 * store_temporary is push, store_permanent_unless_empty is pushMarker,
 * estimate_size is length, and take_count_or_until_permanent is take
 * (which stops in front of a marker) followed by takeMarker.
 */
import { describe, expect, it } from 'vitest';
import { EventBuffer } from '../../src/index.js';

/** take_count_or_until_permanent: the events taken, the permanents reached, and what is left of `count`. */
function takeCountOrUntilPermanent(buffer: EventBuffer<unknown>, count: number) {
  const temps = buffer.take(count);
  const perms = buffer.takeMarker() ?? [];
  return { temps, perms, remaining: count - temps.length };
}

describe('GenStage.BufferTest (buffer_test.exs)', () => {
  describe('estimate_size/1', () => {
    it('does not count permanent events in size estimate', () => {
      const buffer = new EventBuffer<unknown>(10, 'first');
      buffer.push(['temp1', 'temp2']);
      expect(buffer.pushMarker('perm3')).toBe(true);
      expect(buffer.pushMarker('perm4')).toBe(true);
      // Size should still be 2 (only temporary events)
      expect(buffer.length).toBe(2);
    });
  });

  describe('store_temporary/3 with :first keep strategy', () => {
    it('discards excess events when buffer is full', () => {
      const buffer = new EventBuffer<unknown>(3, 'first');
      expect(buffer.push(['a', 'b', 'c'])).toBe(0);
      expect(buffer.push(['d', 'e', 'f'])).toBe(3);
      expect(buffer.length).toBe(3);
      expect(takeCountOrUntilPermanent(buffer, 3)).toMatchObject({ temps: ['a', 'b', 'c'], perms: [] });
    });

    it('handles infinity buffer size', () => {
      const buffer = new EventBuffer<unknown>(Number.POSITIVE_INFINITY, 'first');
      const released: unknown[] = [];
      expect(
        buffer.push(
          Array.from({ length: 1000 }, (_, i) => i + 1),
          (item) => released.push(item),
        ),
      ).toBe(0);
      expect(released).toEqual([]);
      expect(buffer.length).toBe(1000);
    });
  });

  describe('store_temporary/3 with :last keep strategy', () => {
    it('keeps last events when buffer overflows', () => {
      const buffer = new EventBuffer<unknown>(3, 'last');
      expect(buffer.push(['a', 'b', 'c'])).toBe(0);
      expect(buffer.push(['d', 'e', 'f'])).toBe(3);
      expect(takeCountOrUntilPermanent(buffer, 3)).toMatchObject({ temps: ['d', 'e', 'f'], perms: [] });
    });

    it('emits permanent events when they are displaced by new temporaries', () => {
      const buffer = new EventBuffer<unknown>(3, 'last');
      buffer.push(['temp1', 'temp2']);
      buffer.pushMarker('perm3');
      buffer.pushMarker('perm4');
      // Now overflow with :last strategy, which should displace permanents
      const perms: unknown[] = [];
      const excess = buffer.push(['temp5', 'temp6', 'temp7'], (item) => perms.push(item));
      expect(excess).toBe(2);
      expect(perms).toEqual(['perm3', 'perm4']);
    });
  });

  describe('store_permanent_unless_empty/2', () => {
    it('returns :empty when buffer is empty', () => {
      const buffer = new EventBuffer<unknown>(10, 'last');
      expect(buffer.pushMarker('perm1')).toBe(false);
    });
  });

  describe('take_count_or_until_permanent/2', () => {
    it('returns :empty when buffer is empty', () => {
      const buffer = new EventBuffer<unknown>(10, 'last');
      expect(buffer.take(5)).toEqual([]);
      expect(buffer.takeMarker()).toBeUndefined();
    });

    it('takes temporary events in FIFO order, stopping at permanent events and returning them', () => {
      const buffer = new EventBuffer<unknown>(10, 'first');
      buffer.push(['temp1', 'temp2']);
      buffer.pushMarker('perm3');
      buffer.push(['temp4']);
      // We wanted 5, got 2 temps, stopped at perm
      expect(takeCountOrUntilPermanent(buffer, 5)).toEqual({ temps: ['temp1', 'temp2'], perms: ['perm3'], remaining: 3 });
    });

    it('maintains FIFO order for permanent events stored at same position', () => {
      const buffer = new EventBuffer<unknown>(10, 'first');
      buffer.push(['temp1', 'temp2']);
      // Store multiple permanent events at the same wheel position
      buffer.pushMarker('perm3');
      buffer.pushMarker('perm4');
      buffer.pushMarker('perm5');
      expect(takeCountOrUntilPermanent(buffer, 5)).toMatchObject({ temps: ['temp1', 'temp2'], perms: ['perm3', 'perm4', 'perm5'] });
    });

    it('interleaves temporary and permanent events correctly across multiple wheel positions', () => {
      const buffer = new EventBuffer<unknown>(10, 'first');
      buffer.push(['temp1', 'temp2']);
      buffer.pushMarker('perm3');
      buffer.pushMarker('perm4');
      buffer.push(['temp5', 'temp6', 'temp7']);
      buffer.pushMarker('perm8');
      buffer.pushMarker('perm9');
      buffer.push(['temp10']);
      buffer.pushMarker('perm11');

      expect(takeCountOrUntilPermanent(buffer, 3)).toMatchObject({ temps: ['temp1', 'temp2'], perms: ['perm3', 'perm4'] });
      expect(takeCountOrUntilPermanent(buffer, 4)).toMatchObject({ temps: ['temp5', 'temp6', 'temp7'], perms: ['perm8', 'perm9'] });
      expect(takeCountOrUntilPermanent(buffer, 2)).toMatchObject({ temps: ['temp10'], perms: ['perm11'] });
      expect(buffer.length).toBe(0);
    });
  });
});
