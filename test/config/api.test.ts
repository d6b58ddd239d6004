import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { redact } from '../../src/log/redact.ts';
import { configErrorMessage, setUpConfigDirectory } from './helpers.ts';

const { writeConfigFile } = setUpConfigDirectory('api');

const ENQUEUE_TOKEN = 'enqueue-token-0123456789';
const ADMIN_TOKEN = 'admin-token-0123456789abc';

describe('MIRRORFLEET_API_TOKENS', () => {
  it('parses tokens and scopes', () => {
    const config = loadConfig({ MIRRORFLEET_API_TOKENS: `${ENQUEUE_TOKEN}:enqueue,${ADMIN_TOKEN}:admin` });

    expect(config.api.tokens).toEqual([
      { token: ENQUEUE_TOKEN, scopes: ['enqueue'] },
      { token: ADMIN_TOKEN, scopes: ['admin'] },
    ]);
  });

  it('merges the scopes of a repeated token', () => {
    const config = loadConfig({ MIRRORFLEET_API_TOKENS: `${ADMIN_TOKEN}:admin, ${ADMIN_TOKEN}:enqueue` });

    expect(config.api.tokens).toEqual([{ token: ADMIN_TOKEN, scopes: ['enqueue', 'admin'] }]);
  });

  it('replaces the file tokens', () => {
    const path = writeConfigFile({ api: { tokens: [{ token: 'file-token-0123456789', scopes: ['admin'] }] } });
    const config = loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_API_TOKENS: `${ENQUEUE_TOKEN}:enqueue` });

    expect(config.api.tokens).toEqual([{ token: ENQUEUE_TOKEN, scopes: ['enqueue'] }]);
  });

  it('empties the list when empty', () => {
    const path = writeConfigFile({ api: { tokens: [{ token: 'file-token-0123456789', scopes: ['admin'] }] } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_API_TOKENS: '' }).api.tokens).toEqual([]);
  });

  it('registers tokens for redaction', () => {
    const token = 'redact-me-token-0123456789';
    loadConfig({ MIRRORFLEET_API_TOKENS: `${token}:enqueue` });

    expect(redact(`Authorization: Bearer ${token}`)).toBe('Authorization: Bearer <redacted>');
  });

  const invalid: [string, string, RegExp][] = [
    ['an entry without scope', ENQUEUE_TOKEN, /entry 1 <redacted> has no ":SCOPE"/],
    ['an unknown scope', `${ENQUEUE_TOKEN}:root`, /invalid scope "root" in entry 1; expected one of enqueue, admin/],
    ['a short token', 'short:enqueue', /invalid token in entry 1 <redacted>; expected 16 to 256 characters/],
    ['a token with a comma inside', `${ENQUEUE_TOKEN}:enqueue,oops`, /entry 2 <redacted> has no ":SCOPE"/],
  ];
  for (const [label, value, expected] of invalid) {
    it(`rejects ${label} without showing it`, () => {
      const message = configErrorMessage({ MIRRORFLEET_API_TOKENS: value });

      expect(message).toMatch(expected);
      expect(message).toContain('MIRRORFLEET_API_TOKENS');
      expect(message).not.toContain(ENQUEUE_TOKEN);
    });
  }
});

describe('MIRRORFLEET_API_PORT', () => {
  it('overrides the file port', () => {
    const path = writeConfigFile({ api: { port: 9000 } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_API_PORT: '9100' }).api.port).toBe(9100);
  });

  it('defaults to 8080', () => {
    expect(loadConfig({}).api.port).toBe(8080);
  });

  it('rejects port 0', () => {
    expect(configErrorMessage({ MIRRORFLEET_API_PORT: '0' })).toMatch(/MIRRORFLEET_API_PORT: invalid value "0"; expected an integer from 1 to 65535/);
  });
});

describe('api.tokens in the file', () => {
  it('reads tokens with several scopes', () => {
    const path = writeConfigFile({ api: { tokens: [{ token: ADMIN_TOKEN, scopes: ['enqueue', 'admin'] }] } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path }).api.tokens).toEqual([{ token: ADMIN_TOKEN, scopes: ['enqueue', 'admin'] }]);
  });

  it('rejects a repeated token without showing it', () => {
    const path = writeConfigFile({
      api: {
        tokens: [
          { token: ADMIN_TOKEN, scopes: ['admin'] },
          { token: ADMIN_TOKEN, scopes: ['enqueue'] },
        ],
      },
    });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(message).toContain('api.tokens.1.token: invalid value <redacted>; expected a token not already listed at api.tokens.0');
    expect(message).not.toContain(ADMIN_TOKEN);
  });

  it('rejects an empty scope list', () => {
    const path = writeConfigFile({ api: { tokens: [{ token: ADMIN_TOKEN, scopes: [] }] } });

    expect(configErrorMessage({ MIRRORFLEET_CONFIG: path })).toContain('api.tokens.0.scopes: invalid value an array; expected at least one scope');
  });

  it('rejects an unknown scope', () => {
    const path = writeConfigFile({ api: { tokens: [{ token: ADMIN_TOKEN, scopes: ['root'] }] } });

    expect(configErrorMessage({ MIRRORFLEET_CONFIG: path })).toContain('api.tokens.0.scopes.0: invalid value "root"; expected one of enqueue, admin');
  });

  it('hides a malformed token', () => {
    const path = writeConfigFile({ api: { tokens: [{ token: 'has space 0123456789', scopes: ['admin'] }] } });
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(message).toContain('api.tokens.0.token: invalid value <redacted>');
    expect(message).not.toContain('has space');
  });
});

describe('listen addresses', () => {
  it('are absent by default', () => {
    const config = loadConfig({});

    expect('host' in config.api).toBe(false);
    expect('metricsHost' in config.worker).toBe(false);
  });

  it('read MIRRORFLEET_API_HOST and MIRRORFLEET_METRICS_HOST', () => {
    const config = loadConfig({ MIRRORFLEET_API_HOST: '127.0.0.1', MIRRORFLEET_METRICS_HOST: '::1' });

    expect(config.api.host).toBe('127.0.0.1');
    expect(config.worker.metricsHost).toBe('::1');
  });

  it('read the file keys', () => {
    const path = writeConfigFile({ api: { host: '10.0.0.5' }, worker: { metricsHost: '0.0.0.0' } });
    const config = loadConfig({ MIRRORFLEET_CONFIG: path });

    expect(config.api.host).toBe('10.0.0.5');
    expect(config.worker.metricsHost).toBe('0.0.0.0');
  });

  it('reject a host name', () => {
    expect(configErrorMessage({ MIRRORFLEET_METRICS_HOST: 'localhost' })).toContain(
      'MIRRORFLEET_METRICS_HOST: invalid value "localhost"; expected an IP address to listen on',
    );
  });
});
