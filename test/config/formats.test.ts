import { describe, expect, it } from 'vitest';
import { hideUrlCredentials, isCidr, isRedisUrl, isRepositoryPrefix, normaliseHost } from '../../src/config/formats.ts';
import { describeValue, isSecretKey } from '../../src/config/problems.ts';

describe('normaliseHost', () => {
  const valid: [string, string][] = [
    ['registry.example', 'registry.example'],
    ['Registry.Example', 'registry.example'],
    ['registry.example:443', 'registry.example'],
    ['registry.example:80', 'registry.example:80'],
    ['registry.example:5000', 'registry.example:5000'],
    ['localhost', 'localhost'],
    ['127.0.0.1:5001', '127.0.0.1:5001'],
    ['[::1]', '[::1]'],
    ['[::1]:5000', '[::1]:5000'],
    ['[FD00::1]:443', '[fd00::1]'],
    ['my-registry.example:65535', 'my-registry.example:65535'],
  ];
  for (const [input, expected] of valid) {
    it(`normalises ${input}`, () => {
      expect(normaliseHost(input)).toBe(expected);
    });
  }

  const invalid = [
    '',
    'https://registry.example',
    'registry.example/path',
    'registry.example:',
    'registry.example:0',
    'registry.example:65536',
    'registry.example:0443',
    'registry.example:port',
    'under_score.example',
    '-dash.example',
    'dash-.example',
    'double..dot',
    '999.1.1.1',
    '::1',
    '[::1',
    '[::1]x',
    '[fe80::1%eth0]',
    'user@registry.example',
    'a'.repeat(254),
  ];
  for (const input of invalid) {
    it(`rejects ${JSON.stringify(input.length > 20 ? `${input.slice(0, 20)}…` : input)}`, () => {
      expect(normaliseHost(input)).toBeUndefined();
    });
  }
});

describe('isRepositoryPrefix', () => {
  it('accepts path components', () => {
    for (const prefix of ['mirror', 'team/mirror', 'a.b', 'a_b', 'a__b', 'a---b', '0']) {
      expect(isRepositoryPrefix(prefix), prefix).toBe(true);
    }
  });

  it('rejects other forms', () => {
    for (const prefix of ['', '/mirror', 'mirror/', 'team//mirror', 'Mirror', 'a..b', '_a', 'a-', 'a b']) {
      expect(isRepositoryPrefix(prefix), prefix).toBe(false);
    }
  });
});

describe('isCidr', () => {
  it('accepts IPv4 and IPv6 blocks', () => {
    for (const cidr of ['10.0.0.0/8', '0.0.0.0/0', '192.168.1.1/32', 'fd00::/8', '::/0', '::1/128', '10.1.2.3/8']) {
      expect(isCidr(cidr), cidr).toBe(true);
    }
  });

  it('rejects other forms', () => {
    for (const cidr of ['10.0.0.0', '10.0.0.0/33', 'fd00::/129', '10.0.0.0/08', '10.0.0/8', 'fe80::1%eth0/64', 'host/8', '10.0.0.0/']) {
      expect(isCidr(cidr), cidr).toBe(false);
    }
  });
});

describe('isRedisUrl', () => {
  it('accepts redis and rediss', () => {
    expect(isRedisUrl('redis://127.0.0.1:6379')).toBe(true);
    expect(isRedisUrl('rediss://user:pass@redis.internal:6380/2')).toBe(true);
  });

  it('rejects other schemes and no host', () => {
    expect(isRedisUrl('http://127.0.0.1:6379')).toBe(false);
    expect(isRedisUrl('redis://')).toBe(false);
    expect(isRedisUrl('127.0.0.1:6379')).toBe(false);
  });
});

describe('hideUrlCredentials', () => {
  it('hides user information', () => {
    expect(hideUrlCredentials('redis://user:pass@host:6379/0')).toBe('redis://<redacted>@host:6379/0');
  });

  it('keeps URLs without credentials', () => {
    expect(hideUrlCredentials('redis://host:6379')).toBe('redis://host:6379');
  });

  it('hides text with @ but no scheme', () => {
    expect(hideUrlCredentials('user:pass@host')).toBe('<redacted>');
  });
});

describe('secret keys', () => {
  it('recognises passwords, tokens and secret keys', () => {
    for (const key of ['password', 'Password', 'token', 'accessToken', 'secretKey', 'clientSecret']) {
      expect(isSecretKey(key), key).toBe(true);
    }
  });

  it('shows ordinary keys', () => {
    for (const key of ['username', 'host', 'url', 'name']) {
      expect(isSecretKey(key), key).toBe(false);
    }
  });

  it('redacts values of secret keys', () => {
    expect(describeValue('secretKey', 'abc-secret')).toBe('<redacted>');
    expect(describeValue('token', 42)).toBe('<redacted>');
  });

  it('cuts long strings', () => {
    expect(describeValue('name', 'x'.repeat(150))).toBe(JSON.stringify(`${'x'.repeat(100)}…`));
  });
});
