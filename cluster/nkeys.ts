/**
 * NATS NKey users (docs.nats.io "NKeys"): an ed25519 key pair per user. The
 * server's configuration holds only public keys; a client proves it holds the
 * seed by signing the nonce in the server's INFO, so neither the config file
 * nor the wire ever carries a secret. Keys are encoded as nats-io/nkeys does:
 * a prefix byte, the key, a CRC16 (XMODEM, little-endian), in base32 without
 * padding; a user's seed reads "SU…", its public key "U…".
 */
import { createPrivateKey, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';

const PREFIX_SEED = 18 << 3;
const PREFIX_USER = 20 << 3;
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** DER of an ed25519 PKCS#8 private key up to its 32-byte seed (RFC 8410). */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');

function crc16(data: Uint8Array): number {
  let crc = 0;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

function base32(data: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

function unbase32(text: string): Buffer {
  const out: number[] = [];
  let bits = 0;
  let value = 0;
  for (const char of text) {
    const digit = BASE32.indexOf(char);
    if (digit < 0) throw new Error('not base32');
    value = ((value << 5) | digit) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** Key bytes with their prefix bytes and checksum, as text. */
function encode(prefix: number[], key: Uint8Array): string {
  const raw = Buffer.concat([Buffer.from(prefix), key]);
  const crc = Buffer.alloc(2);
  crc.writeUInt16LE(crc16(raw));
  return base32(Buffer.concat([raw, crc]));
}

export interface NKeyUser {
  /** The secret: only the client's file holds it. */
  seed: string;
  /** What the server's configuration names the user by. */
  publicKey: string;
  /** Signs the server's nonce (base64url, as CONNECT's `sig` wants it). */
  sign(nonce: string): string;
}

/** A new user key pair. */
export const newNKeyUser = (): NKeyUser => nkeyUser(encode([PREFIX_SEED | (PREFIX_USER >> 5), (PREFIX_USER & 31) << 3], randomBytes(32)));

/** The user of a seed ("SU…"); a seed that is not one (wrong kind, bad checksum) throws. */
export function nkeyUser(seed: string): NKeyUser {
  const raw = /^SU[A-Z2-7]{56}$/.test(seed) ? unbase32(seed) : Buffer.alloc(0);
  if (raw.length !== 36 || raw.readUInt16LE(34) !== crc16(raw.subarray(0, 34))) throw new Error('not an NKey user seed (SU…)');
  const key: KeyObject = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, raw.subarray(2, 34)]), format: 'der', type: 'pkcs8' });
  const publicRaw = Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x!, 'base64url');
  return {
    seed,
    publicKey: encode([PREFIX_USER], publicRaw),
    sign: (nonce) => sign(null, Buffer.from(nonce), key).toString('base64url'),
  };
}
