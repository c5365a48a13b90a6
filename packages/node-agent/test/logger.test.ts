import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/index.js';

function capture(format: 'json' | 'pretty') {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return { logger: createLogger({ node: 'n1', destination: stream, format }), text: () => text };
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
});
