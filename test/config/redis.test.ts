import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { ConfigError } from '../../src/errors.ts';
import { redact } from '../../src/log/redact.ts';
import { setUpConfigDirectory } from './helpers.ts';

const { writeConfigFile } = setUpConfigDirectory('redis');

describe('redis.url forms', () => {
  it('accepts a Sentinel URL in the file', () => {
    const url = 'redis+sentinel://10.0.0.1:26379,10.0.0.2/mymaster';
    const config = loadConfig({ MIRRORFLEET_CONFIG: writeConfigFile({ redis: { url, keyPrefix: 'fleet' } }) });

    expect(config.redis).toEqual({ url, keyPrefix: 'fleet' });
  });

  it('accepts a Cluster URL in the file', () => {
    const url = 'redis+cluster://10.0.0.1:7000,10.0.0.2:7001';
    const config = loadConfig({ MIRRORFLEET_CONFIG: writeConfigFile({ redis: { url, keyPrefix: '{fleet}' } }) });

    expect(config.redis).toEqual({ url, keyPrefix: '{fleet}' });
  });

  it('rejects a Cluster URL with an untagged prefix', () => {
    let message = '';
    try {
      loadConfig({ MIRRORFLEET_REDIS_URL: 'redis+cluster://10.0.0.1:7000', MIRRORFLEET_KEY_PREFIX: 'fleet' });
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      message = (error as Error).message;
    }

    expect(message).toContain('redis.keyPrefix: invalid value "fleet"; expected a prefix with a hash tag in braces, such as "{mirrorfleet}"');
  });

  it('accepts an untagged prefix for Sentinel', () => {
    const config = loadConfig({ MIRRORFLEET_REDIS_URL: 'redis+sentinel://10.0.0.1/mymaster', MIRRORFLEET_KEY_PREFIX: 'fleet' });

    expect(config.redis.keyPrefix).toBe('fleet');
  });

  it.each([
    ['Sentinel without master name', 'redis+sentinel://10.0.0.1:26379'],
    ['Sentinel with empty host', 'redis+sentinel://10.0.0.1:26379,/mymaster'],
    ['Cluster with a path', 'redis+cluster://10.0.0.1:7000/0'],
    ['Cluster with port 0', 'redis+cluster://10.0.0.1:0'],
  ])('rejects %s', (_case, url) => {
    expect(() => loadConfig({ MIRRORFLEET_REDIS_URL: url, MIRRORFLEET_KEY_PREFIX: '{fleet}' })).toThrow(/MIRRORFLEET_REDIS_URL: invalid value/);
  });

  it('registers the Sentinel URL password', () => {
    loadConfig({ MIRRORFLEET_REDIS_URL: 'redis+sentinel://:sentinel-url-secret-3@10.0.0.1:26379/mymaster' });

    expect(redact('auth sentinel-url-secret-3 failed')).toBe('auth <redacted> failed');
  });

  it('registers the Cluster URL password decoded', () => {
    loadConfig({ MIRRORFLEET_REDIS_URL: 'redis+cluster://user:cluster%40secret-4@10.0.0.1:7000', MIRRORFLEET_KEY_PREFIX: '{fleet}' });

    expect(redact('auth cluster@secret-4 failed')).toBe('auth <redacted> failed');
  });
});
