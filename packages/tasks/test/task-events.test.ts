import { expect, it } from 'vitest';
import { decodeEvents, encodeEvent, encodeEventBatches, followEvents } from '../src/task-events.js';

it('a follower that falls behind keeps the newest events of its bounded buffer and says how many it dropped', async () => {
  let push: (payload: string) => void = () => {};
  let unsubscribed = false;
  const abort = new AbortController();
  const events = followEvents(
    async (p) => {
      push = p;
      return async () => {
        unsubscribed = true;
      };
    },
    { signal: abort.signal, bufferSize: 3 },
  );
  const it = events[Symbol.asyncIterator]();
  const first = it.next();
  await new Promise<void>((resolve) => setImmediate(resolve));
  for (let n = 1; n <= 8; n++) push(encodeEvent({ type: 'enqueued', id: String(n), queue: 'q' }));
  expect((await first).value).toEqual({ type: 'overflow', dropped: 5 });
  const rest = [];
  for (let n = 0; n < 3; n++) rest.push((await it.next()).value);
  expect(rest.map((e) => (e?.type === 'overflow' ? 'overflow' : e?.id))).toEqual(['6', '7', '8']);
  abort.abort();
  expect((await it.next()).done).toBe(true);
  expect(unsubscribed).toBe(true);
});

it('keeps a notification small: a long error is cut, a large progress left out', () => {
  const long = encodeEvent({ type: 'failed', id: '1', queue: 'q', error: 'e'.repeat(100_000) });
  expect(JSON.parse(long).error).toHaveLength(500);
  const big = encodeEvent({ type: 'progress', id: '1', queue: 'q', progress: { blob: 'p'.repeat(9_000) } });
  expect(Buffer.byteLength(big)).toBeLessThan(8000);
  expect(JSON.parse(big)).toMatchObject({ type: 'progress', id: '1', queue: 'q' });
});

it('refuses a bad buffer size with SF_BAD_OPTION naming the option', async () => {
  const events = followEvents(async () => async () => {}, { bufferSize: 0 });
  await expect(events.next()).rejects.toMatchObject({ code: 'SF_BAD_OPTION', message: expect.stringContaining('bufferSize') });
});

it('a batch of events goes as few payloads of at most about 64 KiB, and comes back whole and in order', () => {
  const events = Array.from({ length: 3000 }, (_, n) => ({ type: 'failed' as const, id: String(n), queue: 'q', error: 'e'.repeat(100) }));
  const payloads = encodeEventBatches(events);
  expect(payloads.length).toBeGreaterThan(1);
  for (const p of payloads) expect(p.length).toBeLessThanOrEqual(64 * 1024 + 1);
  const back = payloads.flatMap(decodeEvents);
  expect(back.map((e) => e.id)).toEqual(events.map((e) => e.id));
  expect(encodeEventBatches([])).toEqual([]);
});

it('reads one event or a batch, and leaves out what is not an event', () => {
  expect(decodeEvents(encodeEvent({ type: 'started', id: '1', queue: 'q' })).map((e) => e.id)).toEqual(['1']);
  const mixed = JSON.stringify([{ type: 'started', id: '1', queue: 'q', at: 1 }, { type: 'nope', id: '2', queue: 'q' }, 7, null]);
  expect(decodeEvents(mixed).map((e) => e.id)).toEqual(['1']);
  expect(decodeEvents('not json')).toEqual([]);
  expect(decodeEvents('{"hello":1}')).toEqual([]);
});
