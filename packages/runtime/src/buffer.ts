/** Which events a full producer buffer keeps: the oldest (`first`) or the newest (`last`). */
export type BufferKeep = 'first' | 'last';

/**
 * The events a producer emitted beyond its consumers' demand. Bounded by
 * `capacity`; what does not fit is dropped by the `keep` rule and counted.
 * A chunked queue: pushing and taking cost per batch, not per event.
 */
export class EventBuffer<T> {
  private chunks: T[][] = [];
  private head = 0; // read offset into chunks[0]
  private size = 0;
  /** Events discarded since the buffer was created. */
  dropped = 0;

  constructor(
    readonly capacity: number,
    readonly keep: BufferKeep,
  ) {}

  get length(): number {
    return this.size;
  }

  /** Adds events; returns how many were discarded to stay within capacity. */
  push(events: readonly T[]): number {
    if (events.length === 0) return 0;
    let incoming = events as T[];
    let discarded = 0;
    const room = this.capacity - this.size;
    if (incoming.length > room) {
      if (this.keep === 'first') {
        discarded = incoming.length - Math.max(0, room);
        incoming = room > 0 ? incoming.slice(0, room) : [];
      } else {
        const excess = incoming.length - room;
        if (excess >= this.size) {
          discarded = this.size + (incoming.length - Math.min(incoming.length, this.capacity));
          this.clear();
          incoming = incoming.length > this.capacity ? incoming.slice(incoming.length - this.capacity) : incoming;
        } else {
          this.take(excess);
          discarded = excess;
        }
      }
    }
    if (incoming.length > 0) {
      this.chunks.push(incoming === events ? incoming.slice() : incoming);
      this.size += incoming.length;
    }
    this.dropped += discarded;
    return discarded;
  }

  /** Puts events back at the front (events a dispatcher could not place). */
  unshift(events: readonly T[]): void {
    if (events.length === 0) return;
    if (this.head > 0) {
      const first = this.chunks[0];
      if (first !== undefined) this.chunks[0] = first.slice(this.head);
      this.head = 0;
    }
    this.chunks.unshift(events.slice());
    this.size += events.length;
  }

  /** Removes and returns up to `n` events from the front. */
  take(n: number): T[] {
    const count = Math.min(n, this.size);
    if (count <= 0) return [];
    const first = this.chunks[0] as T[];
    if (this.head === 0 && first.length === count) {
      this.chunks.shift();
      this.size -= count;
      return first;
    }
    const out: T[] = [];
    let left = count;
    while (left > 0) {
      const chunk = this.chunks[0] as T[];
      const available = chunk.length - this.head;
      const n2 = Math.min(available, left);
      for (let i = 0; i < n2; i++) out.push(chunk[this.head + i] as T);
      left -= n2;
      if (n2 === available) {
        this.chunks.shift();
        this.head = 0;
      } else {
        this.head += n2;
      }
    }
    this.size -= count;
    return out;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.size = 0;
  }
}
