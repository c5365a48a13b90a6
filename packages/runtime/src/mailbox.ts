/** A FIFO queue with O(1) push and shift, for a stage's incoming messages. */
export class Mailbox<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head++;
    // Emptied (the usual case: a stage takes each message as it comes): start over at the front, so
    // the array stays short and young instead of growing to the compaction threshold.
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
      return item;
    }
    // Compact once the consumed prefix dominates, so memory follows the live length.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  clear(): T[] {
    const rest = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return rest;
  }
}
