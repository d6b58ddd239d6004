import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { redact } from '../../src/log/redact.ts';
import { configErrorMessage, setUpConfigDirectory } from './helpers.ts';

const KEY = Buffer.alloc(32, 9).toString('base64');
const PREVIOUS = Buffer.alloc(32, 10).toString('base64');

const { writeConfigFile } = setUpConfigDirectory('build');

describe('build configuration', () => {
  it('has defaults', () => {
    const config = loadConfig({});

    expect(config.build).toEqual({ builder: 'auto', concurrency: 1, timeoutSeconds: 3600, cacheRetentionSeconds: 30 * 86_400 });
    expect('secretKey' in config).toBe(false);
    expect('secretKeyPrevious' in config).toBe(false);
  });

  it('reads the file section', () => {
    const path = writeConfigFile({ build: { builder: 'buildah', concurrency: 2, timeoutSeconds: 600, cacheRetentionSeconds: 86_400 }, secretKey: KEY });
    const config = loadConfig({ MIRRORFLEET_CONFIG: path });

    expect(config.build).toEqual({ builder: 'buildah', concurrency: 2, timeoutSeconds: 600, cacheRetentionSeconds: 86_400 });
    expect(config.secretKey).toBe(KEY);
  });

  it('variables override the file', () => {
    const path = writeConfigFile({ build: { builder: 'buildah' }, secretKey: PREVIOUS });
    const config = loadConfig({
      MIRRORFLEET_CONFIG: path,
      MIRRORFLEET_BUILDER: 'docker-buildx',
      MIRRORFLEET_SECRET_KEY: KEY,
      MIRRORFLEET_SECRET_KEY_PREVIOUS: PREVIOUS,
    });

    expect(config.build.builder).toBe('docker-buildx');
    expect(config.secretKey).toBe(KEY);
    expect(config.secretKeyPrevious).toBe(PREVIOUS);
  });

  it('rejects an unknown builder', () => {
    expect(configErrorMessage({ MIRRORFLEET_BUILDER: 'kaniko' })).toContain('MIRRORFLEET_BUILDER: invalid value "kaniko"; expected one of auto, buildah, docker-buildx');
  });

  it('rejects a short key unseen', () => {
    const message = configErrorMessage({ MIRRORFLEET_SECRET_KEY: 'dG9vLXNob3J0LWtleQ==' });

    expect(message).toContain('MIRRORFLEET_SECRET_KEY: invalid value <redacted>; expected the base64 encoding of 32 random bytes');
    expect(message).not.toContain('dG9vLXNob3J0LWtleQ');
  });

  it('rejects a bad file key unseen', () => {
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: writeConfigFile({ secretKeyPrevious: 'not-base64-at-all-secret' }) });

    expect(message).toContain('secretKeyPrevious: invalid value <redacted>');
    expect(message).not.toContain('not-base64-at-all-secret');
  });

  it('rejects out-of-range build settings', () => {
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: writeConfigFile({ build: { concurrency: 0, timeoutSeconds: 1 } }) });

    expect(message).toContain('build.concurrency: invalid value 0; expected an integer from 1 to 64');
    expect(message).toContain('build.timeoutSeconds: invalid value 1; expected an integer from 10 to 604800');
  });

  it('registers keys with the redactor', () => {
    loadConfig({ MIRRORFLEET_SECRET_KEY: KEY, MIRRORFLEET_SECRET_KEY_PREVIOUS: PREVIOUS });

    expect(redact(`key ${KEY} and ${PREVIOUS}`)).toBe('key <redacted> and <redacted>');
  });
});
