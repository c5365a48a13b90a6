import { redactError, redisConnectionOptions, redisPassword } from '@stagefabric/runtime';
import { Redis, type RedisOptions } from 'ioredis';

/**
 * Opens Redis from a URL the one way every part of Stagefabric does
 * (transport, `stagectl status`; the BullMQ store reads URLs with the same
 * function): the URL read by the runtime's redisConnectionOptions (TLS for
 * rediss://, the database number, the ACL user, %-decoded credentials),
 * then `options` on top.
 */
export function openRedis(url: string, options: RedisOptions = {}): Redis {
  return new Redis({ ...redisConnectionOptions(url), ...options });
}

/**
 * A Redis error fit for a log line or a message: ioredis puts the failed
 * command's arguments on its errors (AUTH's are the password; XADD's, a whole
 * message), so they go, and the password of `url` is masked in the text.
 */
export function safeRedisError(error: unknown, url?: string): Error {
  return redactError(error, redisPassword(url));
}
