import { describe, expect, test } from 'vitest';
import { decryptValue, encryptValue, keyRing, parseSecretKey } from '../../src/build/secret-key.ts';
import { ConfigError, InvalidInputError } from '../../src/errors.ts';

const OLD = Buffer.alloc(32, 1).toString('base64');
const NEW = Buffer.alloc(32, 2).toString('base64');

describe('secret key', () => {
  test('round trip through encryption', () => {
    const ring = keyRing({ secretKey: NEW });
    const encrypted = encryptValue(ring.current!, 'API_TOKEN', true, 'tøken with spaces');

    expect(encrypted.keyId).toBe(ring.current!.id);
    expect(encrypted.data).not.toContain('tøken');
    expect(Buffer.from(encrypted.data, 'base64').toString('utf8')).not.toContain('token');
    expect(decryptValue(ring, 'API_TOKEN', true, encrypted)).toBe('tøken with spaces');
  });

  test('same value encrypts differently each time', () => {
    const key = parseSecretKey(NEW);

    expect(encryptValue(key, 'A', false, 'v').data).not.toBe(encryptValue(key, 'A', false, 'v').data);
  });

  test('previous key still decrypts during rotation', () => {
    const encrypted = encryptValue(parseSecretKey(OLD), 'A', false, 'value');

    expect(decryptValue(keyRing({ secretKey: NEW, secretKeyPrevious: OLD }), 'A', false, encrypted)).toBe('value');
  });

  test('unknown key id fails naming the ids', () => {
    const encrypted = encryptValue(parseSecretKey(OLD), 'A', false, 'value');
    const ring = keyRing({ secretKey: NEW });

    expect(() => decryptValue(ring, 'A', false, encrypted)).toThrow(ConfigError);
    expect(() => decryptValue(ring, 'A', false, encrypted)).toThrow(new RegExp(`key id ${parseSecretKey(OLD).id}.*${ring.current!.id} \\(MIRRORFLEET_SECRET_KEY\\)`));
  });

  test('worker without key names it', () => {
    const encrypted = encryptValue(parseSecretKey(OLD), 'A', false, 'value');

    expect(() => decryptValue({}, 'A', false, encrypted)).toThrow(/has no key \(MIRRORFLEET_SECRET_KEY is not set\)/);
  });

  test('altered ciphertext fails authentication', () => {
    const key = parseSecretKey(NEW);
    const encrypted = encryptValue(key, 'A', false, 'value');
    const data = Buffer.from(encrypted.data, 'base64');
    data[0] = data[0]! ^ 1;

    expect(() => decryptValue({ current: key }, 'A', false, { ...encrypted, data: data.toString('base64') })).toThrow(InvalidInputError);
  });

  test('value moved to another name fails', () => {
    const key = parseSecretKey(NEW);
    const encrypted = encryptValue(key, 'SECRET', true, 'value');

    expect(() => decryptValue({ current: key }, 'OTHER', true, encrypted)).toThrow(/authentication failed/);
    expect(() => decryptValue({ current: key }, 'SECRET', false, encrypted)).toThrow(/authentication failed/);
  });

  test('malformed key is rejected without showing it', () => {
    expect(() => parseSecretKey('c2hvcnQ=')).toThrow(ConfigError);
    expect(() => parseSecretKey('c2hvcnQ=')).not.toThrow(/c2hvcnQ/);
  });
});
