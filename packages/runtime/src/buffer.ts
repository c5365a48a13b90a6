/** Which events a full producer buffer keeps: the oldest (`first`) or the newest (`last`). */
export type BufferKeep = 'first' | 'last';

/**
 * Items queued between two events (GenStage's permanent entries): they are
 * never discarded and come out, in order, once every event before them has.
 */
class Marker {
  constructor(readonly items: unknown[]) {}
}

/**
 * The events a producer emitted beyond its consumers' demand. Bounded by
 * `capacity`; what does not fit is dropped by the `keep` rule and counted.
 * A chunked queue: pushing and taking cost per batch, not per event.
 *
 * Besides events (GenStage's temporary entries) it holds markers
 * (its permanent entries): `pushMarker` queues an item behind the events
 * already buffered; `take` stops in front of a marker, and `takeMarker`
 * then hands its items out. Markers do not count in `length` or against
 * `capacity`, and an event dropped by `keep: 'last'` releases the markers
 * queued right behind it instead of losing them.
 */
export class EventBuffer<T> {
  private chunks: (T[] | Marker)[] = [];
  private head = 0; // read offset into chunks[0] when it is an event chunk
  private size = 0;
  private markers = 0;
  /** Events discarded since the buffer was created. */
  dropped = 0;

  constructor(
    readonly capacity: number,
    readonly keep: BufferKeep,
  ) {}

  /** Events buffered (markers not counted). */
  get length(): number {
    return this.size;
  }

  /**
   * Adds events; returns how many were discarded to stay within capacity.
   * Items of markers released by discarded events go to `release`, in order.
   */
  push(events: readonly T[], release?: (item: unknown) => void): number {
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
          this.dropAll(release);
          incoming = incoming.length > this.capacity ? incoming.slice(incoming.length - this.capacity) : incoming;
        } else {
          this.dropFront(excess, release);
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

  /**
   * Queues `item` behind the events buffered now. Returns false, queuing
   * nothing, when no event is buffered (the caller hands it out at once, as
   * GenStage's store_permanent_unless_empty), unless `evenIfEmpty`.
   */
  pushMarker(item: unknown, evenIfEmpty = false): boolean {
    if (this.size === 0 && !evenIfEmpty) return false;
    const last = this.chunks[this.chunks.length - 1];
    if (last instanceof Marker) last.items.push(item);
    else this.chunks.push(new Marker([item]));
    this.markers++;
    return true;
  }

  /** Puts events back at the front (events a dispatcher could not place). */
  unshift(events: readonly T[]): void {
    if (events.length === 0) return;
    this.trimHead();
    this.chunks.unshift(events.slice());
    this.size += events.length;
  }

  /** Removes and returns up to `n` events from the front, stopping in front of a marker. */
  take(n: number): T[] {
    const count = Math.min(n, this.size);
    if (count <= 0) return [];
    const first = this.chunks[0];
    if (first instanceof Marker || first === undefined) return [];
    if (this.head === 0 && first.length === count) {
      this.chunks.shift();
      this.size -= count;
      return first;
    }
    const out: T[] = [];
    let left = count;
    while (left > 0) {
      const chunk = this.chunks[0];
      if (chunk === undefined || chunk instanceof Marker) break;
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
    this.size -= out.length;
    return out;
  }

  /** The items of the marker at the front, removed; undefined when an event (or nothing) is in front. */
  takeMarker(): unknown[] | undefined {
    const first = this.chunks[0];
    if (!(first instanceof Marker)) return undefined;
    this.chunks.shift();
    this.markers -= first.items.length;
    return first.items;
  }

  /** Removes every marker, wherever it is, and returns their items in order. */
  takeAllMarkers(): unknown[] {
    if (this.markers === 0) return [];
    const items: unknown[] = [];
    this.chunks = this.chunks.filter((chunk) => {
      if (!(chunk instanceof Marker)) return true;
      items.push(...chunk.items);
      return false;
    });
    this.markers = 0;
    return items;
  }

  /** Empties the buffer; markers' items go to `release`. */
  clear(release?: (item: unknown) => void): void {
    this.dropAll(release);
  }

  private dropAll(release: ((item: unknown) => void) | undefined): void {
    if (this.markers > 0 && release !== undefined) for (const item of this.takeAllMarkers()) release(item);
    this.chunks = [];
    this.head = 0;
    this.size = 0;
    this.markers = 0;
  }

  /** Drops `n` events from the front (n < size); markers in front of the first kept event are released. */
  private dropFront(n: number, release: ((item: unknown) => void) | undefined): void {
    let left = n;
    for (;;) {
      const chunk = this.chunks[0];
      if (chunk === undefined) break;
      if (chunk instanceof Marker) {
        this.chunks.shift();
        this.markers -= chunk.items.length;
        if (release !== undefined) for (const item of chunk.items) release(item);
        continue;
      }
      if (left === 0) break;
      const available = chunk.length - this.head;
      if (left >= available) {
        this.chunks.shift();
        this.head = 0;
        left -= available;
      } else {
        this.head += left;
        left = 0;
      }
    }
    this.size -= n;
  }

  private trimHead(): void {
    if (this.head === 0) return;
    const first = this.chunks[0];
    if (first !== undefined && !(first instanceof Marker)) this.chunks[0] = first.slice(this.head);
    this.head = 0;
  }
}
