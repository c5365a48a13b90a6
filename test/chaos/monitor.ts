import type { Redis } from 'ioredis';
import type { ChaosAgent } from './agents.js';

export interface MemoryBounds {
  readonly heapBytes: number;
  readonly redisBytes: number;
}

/** Samples every agent's heap (from its /metrics) and Redis's memory once a second, against their bounds. */
export class MemoryMonitor {
  readonly heapMax = new Map<string, number>();
  redisMax = 0;
  samples = 0;
  readonly breaches: string[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sampling = false;

  constructor(
    private readonly agents: readonly ChaosAgent[],
    private readonly redis: Redis,
    readonly bounds: MemoryBounds,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sample(), 1000);
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  private async sample(): Promise<void> {
    if (this.sampling) return;
    this.sampling = true;
    try {
      this.samples++;
      const heaps = await Promise.all(this.agents.map((a) => a.heapBytes()));
      heaps.forEach((bytes, i) => {
        if (bytes === undefined) return;
        const host = (this.agents[i] as ChaosAgent).host.name;
        this.heapMax.set(host, Math.max(this.heapMax.get(host) ?? 0, bytes));
        if (bytes > this.bounds.heapBytes) this.breach(`agent ${host} heap ${mib(bytes)} over ${mib(this.bounds.heapBytes)}`);
      });
      const info = await this.redis.info('memory').catch(() => '');
      const used = Number(/used_memory:(\d+)/.exec(info)?.[1] ?? Number.NaN);
      if (Number.isFinite(used)) {
        this.redisMax = Math.max(this.redisMax, used);
        if (used > this.bounds.redisBytes) this.breach(`redis used_memory ${mib(used)} over ${mib(this.bounds.redisBytes)}`);
      }
    } finally {
      this.sampling = false;
    }
  }

  private breach(what: string): void {
    if (this.breaches.length < 20) this.breaches.push(`${new Date().toISOString()} ${what}`);
  }
}

export const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
