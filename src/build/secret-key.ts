import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { ConfigError, InvalidInputError } from '../errors.ts';

/**
 * The secret key of build variables (`MIRRORFLEET_SECRET_KEY`, base64 of 32 bytes) and what it keys:
 * - AES-256-GCM encryption of every build variable value in a job payload, so that values never reach
 *   Redis in clear. Each value carries the id of the key that encrypted it, so that workers can hold the
 *   current and the previous key while keys are rotated.
 * - The HMAC-SHA256 of secret values in the build tag, so that the tag changes with the value without
 *   revealing it, not even as a plain hash that a guess could be checked against.
 *
 * Three subkeys are derived with HKDF-SHA256 (RFC 5869, empty salt, 32 bytes each except the id) so that
 * no key serves two algorithms:
 *   encryption key  info "mirrorfleet/v1 build-variable encryption"
 *   HMAC key        info "mirrorfleet/v1 build-tag hmac"
 *   key id          info "mirrorfleet/v1 key id", 8 bytes, written as 16 lowercase hex characters
 */

export interface SecretKey {
  /** 16 hex characters derived from the key. They reveal nothing of the key, so they may be stored and shown. */
  id: string;
  encryptionKey: Buffer;
  hmacKey: Buffer;
}

/** Keys of a process: `current` encrypts and keys tags, and `previous` only decrypts. */
export interface KeyRing {
  current?: SecretKey;
  previous?: SecretKey;
}

/** A build variable value as it is stored in a job payload. */
export interface EncryptedValue {
  /** Id of the key that encrypted the value. */
  keyId: string;
  /** Base64 of the 12-byte GCM nonce. */
  iv: string;
  /** Base64 of the ciphertext followed by the 16-byte GCM authentication tag. */
  data: string;
}

const KEY_BYTES = 32;
const IV_BYTES = 12;
const AUTH_TAG_BYTES = 16;

/** Derives the subkeys of a base64 key. Throws ConfigError when it is not base64 of 32 bytes. */
export function parseSecretKey(base64: string, variable = 'MIRRORFLEET_SECRET_KEY'): SecretKey {
  const bytes = Buffer.from(base64, 'base64');
  if (bytes.length !== KEY_BYTES || bytes.toString('base64') !== base64) {
    throw new ConfigError(`invalid ${variable}: expected the base64 encoding of 32 random bytes, such as the output of: openssl rand -base64 32`);
  }
  const derive = (info: string, length: number) => Buffer.from(hkdfSync('sha256', bytes, Buffer.alloc(0), info, length));
  return {
    id: derive('mirrorfleet/v1 key id', 8).toString('hex'),
    encryptionKey: derive('mirrorfleet/v1 build-variable encryption', KEY_BYTES),
    hmacKey: derive('mirrorfleet/v1 build-tag hmac', KEY_BYTES),
  };
}

/** Builds the key ring of a configuration's `secretKey` and `secretKeyPrevious`. */
export function keyRing(keys: { secretKey?: string | undefined; secretKeyPrevious?: string | undefined }): KeyRing {
  const ring: KeyRing = {};
  if (keys.secretKey !== undefined) ring.current = parseSecretKey(keys.secretKey);
  if (keys.secretKeyPrevious !== undefined) ring.previous = parseSecretKey(keys.secretKeyPrevious, 'MIRRORFLEET_SECRET_KEY_PREVIOUS');
  return ring;
}

/**
 * Encrypts one variable value. The name and the secret flag are authenticated with it, so a value moved
 * to another variable, or a secret turned into a plain build argument, fails to decrypt.
 */
export function encryptValue(key: SecretKey, name: string, secret: boolean, value: string): EncryptedValue {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key.encryptionKey, iv, { authTagLength: AUTH_TAG_BYTES });
  cipher.setAAD(associatedData(name, secret));
  const data = Buffer.concat([cipher.update(value, 'utf8'), cipher.final(), cipher.getAuthTag()]);
  return { keyId: key.id, iv: iv.toString('base64'), data: data.toString('base64') };
}

/**
 * Decrypts one variable value with whichever key of `ring` has its key id. Throws ConfigError when this
 * process has no such key, and InvalidInputError when the value does not authenticate.
 */
export function decryptValue(ring: KeyRing, name: string, secret: boolean, encrypted: EncryptedValue): string {
  const key = [ring.current, ring.previous].find((candidate) => candidate?.id === encrypted.keyId);
  if (!key) {
    const held = [
      ring.current ? `${ring.current.id} (MIRRORFLEET_SECRET_KEY)` : undefined,
      ring.previous ? `${ring.previous.id} (MIRRORFLEET_SECRET_KEY_PREVIOUS)` : undefined,
    ].filter((entry) => entry !== undefined);
    throw new ConfigError(
      `cannot decrypt build variable ${name}: it was encrypted with key id ${encrypted.keyId}, and this worker ` +
        (held.length ? `holds only key ids ${held.join(' and ')}` : 'has no key (MIRRORFLEET_SECRET_KEY is not set)') +
        '; give the worker the key the producer used, as MIRRORFLEET_SECRET_KEY or MIRRORFLEET_SECRET_KEY_PREVIOUS',
    );
  }

  const iv = Buffer.from(encrypted.iv, 'base64');
  const data = Buffer.from(encrypted.data, 'base64');
  if (iv.length !== IV_BYTES || data.length < AUTH_TAG_BYTES) {
    throw new InvalidInputError(`cannot decrypt build variable ${name}: the value is not an AES-256-GCM ciphertext with a 12-byte iv and a 16-byte tag`);
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', key.encryptionKey, iv, { authTagLength: AUTH_TAG_BYTES });
    decipher.setAAD(associatedData(name, secret));
    decipher.setAuthTag(data.subarray(data.length - AUTH_TAG_BYTES));
    return Buffer.concat([decipher.update(data.subarray(0, data.length - AUTH_TAG_BYTES)), decipher.final()]).toString('utf8');
  } catch {
    throw new InvalidInputError(
      `cannot decrypt build variable ${name} with key id ${key.id}: authentication failed, so the payload was altered after encryption ` +
        `(or the variable's name or secret flag changed)`,
    );
  }
}

/** Returns the HMAC-SHA256 of `value` under the key's HMAC subkey, as 64 lowercase hex characters. */
export function hmacValue(key: SecretKey, value: string): string {
  return createHmac('sha256', key.hmacKey).update(value, 'utf8').digest('hex');
}

function associatedData(name: string, secret: boolean): Buffer {
  return Buffer.from(`mirrorfleet/v1 build variable\n${name}\n${secret ? 'secret' : 'plain'}`, 'utf8');
}
