import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** The cookie a signed-in browser carries. */
export const SESSION_COOKIE = 'sf_console';

/** What decided whether a request may act, for the refusal's message and log line. */
export type Refusal =
  | 'actions are off: the console was started without STAGEFABRIC_CONSOLE_TOKEN'
  | 'not signed in: no valid token or session'
  | 'form token missing or wrong'
  | 'request from another origin';

const digest = (text: string) => createHash('sha256').update(text).digest();

/** Equal strings, in time that does not depend on where they differ. */
function same(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/** The request facts the check needs, whatever the web framework. */
export interface ActingRequest {
  readonly authorization: string | undefined;
  readonly cookie: string | undefined;
  /** The form's hidden field. */
  readonly formToken: string | undefined;
  readonly origin: string | undefined;
  readonly secFetchSite: string | undefined;
  /** The origin this console is reached at, from the Host header: `http://host:port`. */
  readonly selfOrigin: string;
}

/**
 * Who may act: a request with `Authorization: Bearer TOKEN`, or a browser
 * signed in with the token (an HttpOnly, SameSite=Strict cookie derived from
 * it) whose form carries the token derived for forms and comes from this
 * origin. Without a token every action is refused: the console is read-only.
 * Cookie and form values are HMACs of the token, so neither reveals it; log
 * lines name a token only by its fingerprint.
 */
export class ConsoleAuth {
  readonly enabled: boolean;
  /** The first 12 hex digits of the token's SHA-256: names it in logs without revealing it. */
  readonly fingerprint: string | undefined;
  private readonly session: string | undefined;
  private readonly form: string | undefined;

  constructor(private readonly token: string | undefined) {
    this.enabled = token !== undefined && token !== '';
    if (!this.enabled || token === undefined) return;
    this.fingerprint = digest(token).toString('hex').slice(0, 12);
    this.session = createHmac('sha256', token).update('stagefabric console session').digest('base64url');
    this.form = createHmac('sha256', token).update('stagefabric console form').digest('base64url');
  }

  /** Whether a sign-in form's value is the token. */
  tokenMatches(given: string | undefined): boolean {
    return this.token !== undefined && this.enabled && given !== undefined && same(given, this.token);
  }

  /** The cookie value a browser receives once signed in. */
  sessionValue(): string | undefined {
    return this.session;
  }

  /** The hidden form field of every action form a signed-in browser is shown. */
  formToken(): string | undefined {
    return this.form;
  }

  /** Whether this cookie header holds a valid session. */
  signedIn(cookieHeader: string | undefined): boolean {
    if (this.session === undefined || cookieHeader === undefined) return false;
    const value = readCookie(cookieHeader, SESSION_COOKIE);
    return value !== undefined && same(value, this.session);
  }

  /** Undefined when the request may act; else why not. */
  check(req: ActingRequest): Refusal | undefined {
    if (!this.enabled || this.token === undefined) return 'actions are off: the console was started without STAGEFABRIC_CONSOLE_TOKEN';
    const bearer = /^Bearer (.+)$/.exec(req.authorization ?? '')?.[1];
    // A header no other site's page can set: enough on its own.
    if (bearer !== undefined) return same(bearer, this.token) ? undefined : 'not signed in: no valid token or session';
    if (!this.signedIn(req.cookie)) return 'not signed in: no valid token or session';
    // A cookie rides along on any site's form post (SameSite aside): the form must prove it came from our page.
    if (req.origin !== undefined && req.origin !== req.selfOrigin) return 'request from another origin';
    if (req.origin === undefined && req.secFetchSite !== undefined && req.secFetchSite !== 'same-origin' && req.secFetchSite !== 'none')
      return 'request from another origin';
    if (req.formToken === undefined || this.form === undefined || !same(req.formToken, this.form)) return 'form token missing or wrong';
    return undefined;
  }
}

/** One cookie's value from a Cookie header. */
export function readCookie(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
