import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/index.js';

function capture(format: 'json' | 'pretty', secrets: readonly string[] = []) {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return { logger: createLogger({ node: 'n1', destination: stream, format, secrets }), text: () => text };
}

describe('agent logs', () => {
  it('are JSON lines bound to the node, with connection strings masked', async () => {
    const { logger, text } = capture('json');
    logger.info(
      { stage: 'printer', url: 'redis://user:hunter2@redis:6379', databaseUrl: 'postgres://a:b@db/x' },
      'connecting to postgres://app:s3cret@db:5432/tasks',
    );
    await new Promise((r) => setImmediate(r));
    const line = JSON.parse(text().trim()) as Record<string, unknown>;
    expect(line).toMatchObject({ node: 'n1', stage: 'printer', url: '[redacted]', databaseUrl: '[redacted]' });
    expect(line.msg).toBe('connecting to postgres://app:[redacted]@db:5432/tasks');
    expect(text()).not.toContain('hunter2');
    expect(text()).not.toContain('s3cret');
  });

  it('read as text on a terminal', async () => {
    const { logger, text } = capture('pretty');
    logger.warn({ stage: 'boxer' }, 'stage restarted');
    await new Promise((r) => setTimeout(r, 20));
    expect(text()).toMatch(/WARN.*stage restarted/);
    expect(text().trim().startsWith('{')).toBe(false);
  });

  it('an error keeps its message but loses what could hold a credential: a Redis command’s arguments, a known secret', async () => {
    const { logger, text } = capture('json', ['fabric-secret-value-0123']);
    // As ioredis raises it when Redis refuses AUTH: the command and its arguments (the password) on the error.
    const refused = Object.assign(new Error('WRONGPASS invalid username-password pair or user is disabled.'), {
      command: { name: 'auth', args: ['app', 'p@ssw0rd!'] },
      code: 'WRONGPASS',
    });
    logger.warn({ err: refused }, 'transport error; retrying');
    logger.error({ err: new Error('secret fabric-secret-value-0123 rejected') }, 'the fabric-secret-value-0123 leaked into a message');
    await new Promise((r) => setImmediate(r));
    const [first, second] = text()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { msg: string; err: Record<string, unknown> });
    expect(first?.err).toMatchObject({
      message: 'WRONGPASS invalid username-password pair or user is disabled.',
      command: 'auth',
      code: 'WRONGPASS',
    });
    expect(second?.err.message).toBe('secret [redacted] rejected');
    expect(second?.msg).toBe('the [redacted] leaked into a message');
    expect(text()).not.toContain('p@ssw0rd!');
    expect(text()).not.toContain('fabric-secret-value-0123');
  });
});
