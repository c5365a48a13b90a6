import { execFile } from 'node:child_process';
import { Socket } from 'node:net';
import { promisify } from 'node:util';
import { describe, expect, inject, it } from 'vitest';
import { uniquePrefix } from './isolation.js';
import { waitFor } from './wait-for.js';

const run = promisify(execFile);

/** Encodes one command in RESP. */
function resp(args: readonly string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** Sends commands over one raw socket and resolves with the raw replies once `lines` CRLF-terminated lines came back. */
function redisRaw(url: string, commands: readonly (readonly string[])[], lines: number): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let received = '';
    socket.setTimeout(5000, () => {
      socket.destroy();
      reject(new Error(`redis at ${url} did not reply in 5 s (got ${JSON.stringify(received)})`));
    });
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      received += chunk.toString('utf8');
      if (received.split('\r\n').length - 1 >= lines) {
        socket.destroy();
        resolve(received);
      }
    });
    socket.connect(Number(port || 6379), hostname || '127.0.0.1', () => socket.write(commands.map(resp).join('')));
  });
}

describe('integration services', () => {
  const redisUrl = inject('redisUrl');
  const databaseUrl = inject('databaseUrl');

  it('Redis answers PING', async () => {
    expect(await redisRaw(redisUrl, [['PING']], 1)).toBe('+PONG\r\n');
  });

  it('Redis keeps a value across SET and GET', async () => {
    const key = `${uniquePrefix('services')}roundtrip`;
    const value = `v-${Date.now()}`;
    // +OK, then $len and the value, then :1 for DEL.
    const replies = await redisRaw(
      redisUrl,
      [
        ['SET', key, value],
        ['GET', key],
        ['DEL', key],
      ],
      4,
    );
    expect(replies).toBe(`+OK\r\n$${value.length}\r\n${value}\r\n:1\r\n`);
  });

  it('PostgreSQL answers SELECT 1', async () => {
    const { stdout } = await run('psql', [databaseUrl, '-XtAc', 'SELECT 1'], { timeout: 10_000 });
    expect(stdout.trim()).toBe('1');
  });

  it('waitFor names what it waited for on timeout', async () => {
    let polls = 0;
    await waitFor(() => ++polls >= 3, 'three polls', 10_000, 1);
    expect(polls).toBe(3);
    await expect(waitFor(() => false, 'something that never happens', 50)).rejects.toThrow('something that never happens');
  });
});
