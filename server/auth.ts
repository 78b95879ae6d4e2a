import { createHmac, timingSafeEqual } from 'node:crypto';

/** HMAC-SHA256's own key size: a shorter secret can be guessed offline from one token. */
export const MIN_STREAM_SECRET_BYTES = 32;

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
 * Stream tokens: `<id>.<expiry, epoch seconds>.<HMAC-SHA256 of "<id>.<expiry>", base64url>`.
 * A backend that knows the secret mints one per user and hands it to that
 * user's page; the server checks it without any state.
 */
export function mintStreamToken(secret: string, id: number, ttlSeconds: number, now = Date.now()): string {
  const payload = `${id}.${Math.floor(now / 1000) + ttlSeconds}`;
  return `${payload}.${sign(secret, payload)}`;
}

/** Why a token does not open stream `id`, or null when it does. */
export function checkStreamToken(secret: string, id: number, token: string, now = Date.now()): string | null {
  const match = /^([1-9][0-9]*)\.([0-9]+)\.([A-Za-z0-9_-]{43})$/.exec(token);
  if (!match) return 'malformed token';
  const given = Buffer.from(match[3], 'base64url');
  const expected = Buffer.from(sign(secret, `${match[1]}.${match[2]}`), 'base64url');
  if (!timingSafeEqual(given, expected)) return 'bad signature';
  if (Number(match[1]) !== id) return `token is for user ${match[1]}`;
  if (Number(match[2]) * 1000 <= now) return 'token expired';
  return null;
}

const sign = (secret: string, payload: string): string => createHmac('sha256', secret).update(payload).digest('base64url');
