import { FabricError } from './errors.js';

/**
 * What a Redis URL says, as connection options any Redis client takes (ioredis
 * accepts this object as is). It lives here, in the package without network
 * code, because both the fabric and the BullMQ task store open Redis and
 * neither may depend on the other: one parser, so `rediss://`, the database
 * number, the ACL user and %-encoded credentials mean the same everywhere.
 */
export interface RedisConnectionOptions {
  readonly host: string;
  readonly port: number;
  /** The logical database, from the URL's path (`/3`); 0 when absent. */
  readonly db: number;
  /** The ACL user; absent means Redis's `default` user. */
  readonly username?: string;
  readonly password?: string;
  /**
   * Set for `rediss://`: TLS, the server's certificate checked against the
   * system's CAs (and NODE_EXTRA_CA_CERTS) for the URL's host; `servername`
   * (SNI) is sent for a host name, never for an address (RFC 6066).
   */
  readonly tls?: { readonly servername?: string };
}

const PORT_DEFAULT = 6379;
/** Redis's default number of databases is 16; a server may be configured for more. */
const MAX_DB = 1 << 20;

/**
 * Parses `redis://[user[:password]@]host[:port][/db]` or `rediss://…`.
 * Throws SF_BAD_OPTION naming `what` and the URL with its password masked.
 */
export function redisConnectionOptions(url: string, what = 'REDIS_URL'): RedisConnectionOptions {
  const bad = (rule: string): never => {
    throw new FabricError('SF_BAD_OPTION', `${what} ${redactUrl(url)}: ${rule}`);
  };
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return bad('is not a URL (expected redis://[user:password@]host[:port][/db] or rediss://…)');
  }
  if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') bad(`scheme must be redis: or rediss:, got ${parsed.protocol}`);
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  if (host === '') bad('names no host');
  const port = parsed.port === '' ? PORT_DEFAULT : Number(parsed.port);
  const path = parsed.pathname.replace(/^\//, '');
  const db = path === '' ? 0 : Number(path);
  if (!/^\d*$/.test(path) || !Number.isInteger(db) || db < 0 || db >= MAX_DB) bad(`the path must be a database number, got /${path}`);
  let username: string | undefined;
  let password: string | undefined;
  try {
    username = parsed.username === '' ? undefined : decodeURIComponent(parsed.username);
    password = parsed.password === '' ? undefined : decodeURIComponent(parsed.password);
  } catch {
    bad('its credentials are not valid %-encoding');
  }
  return {
    host,
    port,
    db,
    ...(username === undefined ? {} : { username }),
    ...(password === undefined ? {} : { password }),
    ...(parsed.protocol === 'rediss:' ? { tls: isAddress(host) ? {} : { servername: host } } : {}),
  };
}

function isAddress(host: string): boolean {
  return host.includes(':') || /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
}

/** The URL with its password (and nothing else) replaced, fit for a log line or an error message. */
export function redactUrl(url: string): string {
  return redactCredentials(url);
}

/**
 * Masks what may be a credential in free text: the password of every
 * `scheme://user:password@` URL, and each of `secrets` (passwords, shared
 * secrets) wherever it appears, plain or %-encoded.
 */
export function redactCredentials(text: string, secrets: readonly string[] = []): string {
  let out = text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^\s]*@/gi, '$1[redacted]@');
  for (const secret of secrets) {
    if (secret.length < 4) continue;
    for (const form of new Set([secret, encodeURIComponent(secret)])) out = out.split(form).join('[redacted]');
  }
  return out;
}

/**
 * An error fit for a log line or a message: message and stack with
 * credentials masked, and of a Redis client's `command` only its name (its
 * arguments are AUTH's password or a whole message). `code` is kept.
 */
export function redactError(error: unknown, secrets: readonly string[] = []): Error {
  const source = error instanceof Error ? error : new Error(String(error));
  const safe = new Error(redactCredentials(source.message, secrets));
  safe.name = source.name;
  safe.stack = redactCredentials(source.stack ?? `${source.name}: ${source.message}`, secrets);
  const command = (source as { command?: unknown }).command;
  if (typeof command === 'object' && command !== null && typeof (command as { name?: unknown }).name === 'string') {
    Object.assign(safe, { command: (command as { name: string }).name });
  }
  const code = (source as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') Object.assign(safe, { code });
  return safe;
}

/** The password a Redis URL carries, for masking; none when the URL does not parse. */
export function redisPassword(url: string | undefined): string[] {
  if (url === undefined) return [];
  try {
    const { password } = redisConnectionOptions(url);
    return password === undefined ? [] : [password];
  } catch {
    return [];
  }
}
