import { type FabricStatus, readFabricStatus, redisKeys } from '@stagefabric/fabric';
import { Redis } from 'ioredis';
import { type FabricRates, fabricRates, type StatusSample } from '../fabric-rates.js';

/** A malformed inbox entry the fabric moved aside, as the dead-letter stream keeps it. */
export interface DeadLetterEntry {
  /** The dead-letter stream's entry id. */
  readonly id: string;
  readonly at: Date;
  readonly inbox: string;
  /** The entry's id in its inbox. */
  readonly entry: string;
  readonly reason: string;
  /** The entry's fields as received, at most 4 KiB. */
  readonly raw: Buffer;
}

export interface FabricView {
  readonly sample: StatusSample;
  readonly rates: FabricRates;
  /** Set when the last read failed: the view is the one before it. */
  readonly error: string | undefined;
}

const STREAM_ID = /^\d{1,20}-\d{1,20}$/;

/**
 * The fabric as the console shows it: status snapshots read from Redis at
 * most once per `refreshMs` however many pages watch (every viewer shares
 * the latest read), rates between the last two, and the dead letters.
 */
export class FabricWatch {
  private readonly keys;
  private readonly redis: Redis;
  private previous: StatusSample | undefined;
  private last: StatusSample | undefined;
  private reading: Promise<void> | undefined;
  private error: string | undefined;

  constructor(
    private readonly url: string,
    readonly namespace: string,
    private readonly refreshMs: number,
    onError: (error: Error) => void,
  ) {
    this.keys = redisKeys(namespace);
    this.redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    this.redis.on('error', onError);
  }

  /** The latest view, reading the fabric again when the last read is older than refreshMs. */
  async view(): Promise<FabricView> {
    if (this.last === undefined || Date.now() - this.last.at >= this.refreshMs) {
      this.reading ??= this.read().finally(() => {
        this.reading = undefined;
      });
      await this.reading;
    }
    const last = this.last ?? {
      at: Date.now(),
      status: { namespace: this.namespace, nodes: [], subscriptions: [], inboxes: [], malformed: [] },
    };
    return { sample: last, rates: fabricRates(this.previous ?? last, last), error: this.error };
  }

  private async read(): Promise<void> {
    try {
      const status: FabricStatus = await readFabricStatus(this.url, this.namespace);
      this.previous = this.last;
      this.last = { at: Date.now(), status };
      this.error = undefined;
    } catch (error) {
      this.error = `cannot read the fabric from Redis: ${(error as Error).message}`;
    }
  }

  /** The newest dead letters, newest first, and how many the stream holds. */
  async deadLetters(count: number): Promise<{ letters: DeadLetterEntry[]; total: number }> {
    const [entries, total] = await Promise.all([
      this.redis.xrevrangeBuffer(this.keys.deadLetters, '+', '-', 'COUNT', count),
      this.redis.xlen(this.keys.deadLetters),
    ]);
    return { letters: entries.map(([id, fields]) => toLetter(id.toString(), fields)), total };
  }

  async deadLetter(id: string): Promise<DeadLetterEntry | undefined> {
    if (!STREAM_ID.test(id)) return undefined;
    const [found] = await this.redis.xrangeBuffer(this.keys.deadLetters, id, id);
    return found === undefined ? undefined : toLetter(found[0].toString(), found[1]);
  }

  close(): void {
    this.redis.disconnect();
  }
}

function toLetter(id: string, fields: Buffer[]): DeadLetterEntry {
  const field = (name: string): Buffer | undefined => {
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i]?.toString() === name) return fields[i + 1];
    return undefined;
  };
  return {
    id,
    at: new Date(Number(id.split('-')[0])),
    inbox: field('inbox')?.toString('utf8') ?? '?',
    entry: field('entry')?.toString('utf8') ?? '?',
    reason: field('reason')?.toString('utf8') ?? '?',
    raw: field('raw') ?? Buffer.alloc(0),
  };
}
