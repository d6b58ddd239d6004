import { describe, expect, it } from 'vitest';
import { ApiTokens, basicPassword, bearerToken } from '../../src/api/auth.ts';
import { redact } from '../../src/log/redact.ts';

const ENQUEUE = 'enqueue-token-0123456789';
const ADMIN = 'admin-token-0123456789abc';
const BOTH = 'both-token-0123456789abcd';

const tokens = new ApiTokens([
  { token: ENQUEUE, scopes: ['enqueue'] },
  { token: ADMIN, scopes: ['admin'] },
  { token: BOTH, scopes: ['enqueue', 'admin'] },
]);

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

describe('ApiTokens.authorize', () => {
  const cases: [string, string | undefined, 'enqueue' | 'admin', string][] = [
    ['enqueue token, enqueue scope', `Bearer ${ENQUEUE}`, 'enqueue', 'allowed'],
    ['enqueue token, admin scope', `Bearer ${ENQUEUE}`, 'admin', 'forbidden'],
    ['admin token, enqueue scope', `Bearer ${ADMIN}`, 'enqueue', 'forbidden'],
    ['admin token, admin scope', `Bearer ${ADMIN}`, 'admin', 'allowed'],
    ['token with both scopes', `Bearer ${BOTH}`, 'admin', 'allowed'],
    ['no header', undefined, 'enqueue', 'unauthenticated'],
    ['unknown token', 'Bearer enqueue-token-0123456780', 'enqueue', 'unauthenticated'],
    ['token prefix only', `Bearer ${ENQUEUE.slice(0, -1)}`, 'enqueue', 'unauthenticated'],
    ['token with extra character', `Bearer ${ENQUEUE}x`, 'enqueue', 'unauthenticated'],
    ['lowercase scheme', `bearer ${ENQUEUE}`, 'enqueue', 'allowed'],
    ['other scheme', `Token ${ENQUEUE}`, 'enqueue', 'unauthenticated'],
    ['basic without allowBasic', basic('ops', ADMIN), 'admin', 'unauthenticated'],
  ];
  for (const [label, header, scope, expected] of cases) {
    it(`decides ${label}`, () => {
      expect(tokens.authorize(header, scope)).toBe(expected);
    });
  }

  it('accepts basic credentials with allowBasic', () => {
    expect(tokens.authorize(basic('anyone', ADMIN), 'admin', { allowBasic: true })).toBe('allowed');
    expect(tokens.authorize(basic('anyone', ENQUEUE), 'admin', { allowBasic: true })).toBe('forbidden');
    expect(tokens.authorize(basic('anyone', 'wrong-token-0123456789'), 'admin', { allowBasic: true })).toBe('unauthenticated');
  });

  it('registers tokens for redaction', () => {
    new ApiTokens([{ token: 'registered-token-0123456789', scopes: ['admin'] }]);

    expect(redact('token registered-token-0123456789 seen')).toBe('token <redacted> seen');
  });
});

describe('header parsing', () => {
  it('reads a bearer token', () => {
    expect(bearerToken(`Bearer ${ENQUEUE}`)).toBe(ENQUEUE);
    expect(bearerToken('Bearer a b')).toBeUndefined();
    expect(bearerToken('Bearer ')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });

  it('reads a basic password with colons', () => {
    expect(basicPassword(basic('user', 'pa:ss'))).toBe('pa:ss');
    expect(basicPassword(`Basic ${Buffer.from('no-colon').toString('base64')}`)).toBeUndefined();
  });
});
