/**
 * NATS NKey users (docs.nats.io "NKeys"): an ed25519 key pair per user, through
 * @nats-io/nkeys. The server's configuration holds only public keys; a client
 * proves it holds the seed by signing the nonce in the server's INFO, so neither
 * the config file nor the wire ever carries a secret. A user's seed reads "SU…",
 * its public key "U…".
 */
import { createUser, fromSeed, type KeyPair } from '@nats-io/nkeys';

export interface NKeyUser {
  /** The secret: only the client's file holds it. */
  seed: string;
  /** What the server's configuration names the user by. */
  publicKey: string;
  /** Signs the server's nonce (base64url, as CONNECT's `sig` wants it). */
  sign(nonce: string): string;
}

/** A new user key pair. */
export const newNKeyUser = (): NKeyUser => nkeyUser(new TextDecoder().decode(createUser().getSeed()));

/** The key pair of a user's seed; undefined for anything else (fromSeed takes any kind: operator, account, user). */
function userPair(seed: string): KeyPair | undefined {
  if (!/^SU[A-Z2-7]{56}$/.test(seed)) return undefined;
  try {
    return fromSeed(new TextEncoder().encode(seed));
  } catch {
    return undefined; // a bad checksum or encoding
  }
}

/** The user of a seed ("SU…"); a seed that is not one (wrong kind, bad checksum) throws. */
export function nkeyUser(seed: string): NKeyUser {
  const pair = userPair(seed);
  if (pair === undefined) throw new Error('not an NKey user seed (SU…)');
  return {
    seed,
    publicKey: pair.getPublicKey(),
    sign: (nonce) => Buffer.from(pair.sign(new TextEncoder().encode(nonce))).toString('base64url'),
  };
}
