import { createHmac, timingSafeEqual } from 'node:crypto';
import { NO_TOPICS } from '../router/registry.js';
import { kindOf, SubjectError, toSubject } from '../subsmanager/subjects.js';

/** HMAC-SHA256's own key size: a shorter secret can be guessed offline from one token. */
const MIN_STREAM_SECRET_BYTES = 32;

/** Throws when a stream secret is given but too short to sign with (an empty one would let anyone mint tokens). */
export function checkStreamSecret(secret: string | undefined): void {
  if (secret === undefined) return;
  const bytes = Buffer.byteLength(secret);
  if (bytes < MIN_STREAM_SECRET_BYTES)
    throw new Error(
      `the stream secret (--stream-secret or C1M_STREAM_SECRET) is ${bytes} bytes: it needs at least ${MIN_STREAM_SECRET_BYTES} random bytes, ` +
        'e.g. --stream-secret "$(openssl rand -base64 32)"; leave it unset for streams open to anyone',
    );
}

/**
 * Stream tokens: `<id>.<expiry, epoch seconds>.<HMAC-SHA256 of "<id>.<expiry>", base64url>`, or, for a page that
 * also listens to topics, `<id>.<expiry>.<scope>.<HMAC of "<id>.<expiry>.<scope>">` where the scope is the base64url
 * of the topics the bearer may listen to, comma-separated: a topic (`photo:789`) or all of a kind (`photo:*`).
 * A backend that knows the secret mints one per user and hands it to that user's page; the server checks it
 * without any state. Tokens without a scope open their user's stream and no topic, as before.
 */
export function mintStreamToken(secret: string, id: number, ttlSeconds: number, now = Date.now(), topics: readonly string[] = []): string {
  for (const entry of topics) if (!isScopeEntry(entry)) throw new SubjectError(`a token's topics are kind:id or kind:*, not ${JSON.stringify(entry)}`);
  const scope = topics.length > 0 ? `.${Buffer.from(topics.join(',')).toString('base64url')}` : '';
  const payload = `${id}.${Math.floor(now / 1000) + ttlSeconds}${scope}`;
  return `${payload}.${sign(secret, payload)}`;
}

/** Why a token does not open stream `id` listening to `topics`, or null when it does. */
export function checkStreamToken(secret: string, id: number, token: string, now = Date.now(), topics: readonly string[] = []): string | null {
  const match = /^([1-9][0-9]*)\.([0-9]+)(?:\.[A-Za-z0-9_-]+)?\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!match) return 'malformed token';
  const given = Buffer.from(match[3], 'base64url');
  const expected = Buffer.from(sign(secret, token.slice(0, token.length - 44)), 'base64url');
  if (!timingSafeEqual(given, expected)) return 'bad signature';
  if (Number(match[1]) !== id) return `token is for user ${match[1]}`;
  if (Number(match[2]) * 1000 <= now) return 'token expired';
  return uncovered(tokenScope(token), topics);
}

/** The topics and kinds (`kind:*`) a token lets its bearer listen to (none for a token without a scope); for a token checkStreamToken accepted. */
export function tokenScope(token: string): readonly string[] {
  const parts = token.split('.');
  return parts.length === 4 ? Buffer.from(parts[2], 'base64url').toString().split(',') : NO_TOPICS;
}

/** Why a token's `scope` does not cover all of `topics`, or null when it does. */
export function uncovered(scope: readonly string[], topics: readonly string[]): string | null {
  for (const topic of topics) if (!scope.includes(topic) && !scope.includes(`${kindOf(topic)}:*`)) return `token does not cover topic ${topic}`;
  return null;
}

/** A topic, or `kind:*`: every topic of a kind, a valid one when `kind:x` is a topic. */
const isScopeEntry = (entry: string): boolean => isTopic(entry.endsWith(':*') ? `${entry.slice(0, -1)}x` : entry);

const isTopic = (text: string): boolean => {
  try {
    return typeof toSubject(text) === 'string';
  } catch {
    return false;
  }
};

const sign = (secret: string, payload: string): string => createHmac('sha256', secret).update(payload).digest('base64url');
