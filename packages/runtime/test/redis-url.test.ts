import { describe, expect, it } from 'vitest';
import { isFabricError, redactCredentials, redactUrl, redisConnectionOptions } from '../src/index.js';

describe('redisConnectionOptions', () => {
  it('reads host, port, database, ACL user and %-decoded password; rediss:// asks for TLS checked against the host', () => {
    expect(redisConnectionOptions('redis://127.0.0.1:6380')).toEqual({ host: '127.0.0.1', port: 6380, db: 0 });
    expect(redisConnectionOptions('redis://redis.internal')).toEqual({ host: 'redis.internal', port: 6379, db: 0 });
    expect(redisConnectionOptions(`rediss://app:${encodeURIComponent('p@ss:w/rd%?#')}@cache.example.com:6390/5`)).toEqual({
      host: 'cache.example.com',
      port: 6390,
      db: 5,
      username: 'app',
      password: 'p@ss:w/rd%?#',
      tls: { servername: 'cache.example.com' },
    });
    expect(redisConnectionOptions('redis://:only-a-password@[::1]:7000/2')).toEqual({
      host: '::1',
      port: 7000,
      db: 2,
      password: 'only-a-password',
    });
  });

  it('refuses what is not a Redis URL, naming the variable and the URL without its password', () => {
    for (const [url, rule] of [
      ['redis://app:s3cret-pw@host:notaport', /is not a URL/],
      ['http://app:s3cret-pw@host', /scheme must be redis: or rediss:/],
      ['redis://app:s3cret-pw@host/x1', /database number/],
      ['redis://app:%E0%A4%A@host', /%-encoding/],
    ] as const) {
      let error: unknown;
      try {
        redisConnectionOptions(url, 'REDIS_URL');
      } catch (e) {
        error = e;
      }
      expect(isFabricError(error, 'SF_BAD_OPTION'), url).toBe(true);
      const message = (error as Error).message;
      expect(message).toMatch(/^REDIS_URL redis|^REDIS_URL http/);
      expect(message).toMatch(rule);
      expect(message).not.toContain('s3cret-pw');
    }
  });
});

describe('redaction', () => {
  it('masks the password of URLs in text, and given secrets plain or %-encoded', () => {
    expect(redactUrl('rediss://app:p%40ss@host:6379/2')).toBe('rediss://app:[redacted]@host:6379/2');
    expect(redactUrl('redis://host:6379')).toBe('redis://host:6379');
    const text = 'connect redis://:hunter22@h failed; AUTH hunter22; url-encoded p%40ss%3A1 and p@ss:1';
    expect(redactCredentials(text, ['hunter22', 'p@ss:1'])).toBe(
      'connect redis://:[redacted]@h failed; AUTH [redacted]; url-encoded [redacted] and [redacted]',
    );
  });
});
