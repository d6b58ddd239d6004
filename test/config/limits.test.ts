import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { configErrorMessage, setUpConfigDirectory } from './helpers.ts';

const { writeConfigFile } = setUpConfigDirectory('limits');

describe('limits', () => {
  it('defaults to 30 minutes per job and 60 s per request', () => {
    expect(loadConfig({}).limits).toEqual({ jobTimeoutSeconds: 1800, requestTimeoutSeconds: 60 });
  });

  it('reads both keys from the file', () => {
    const path = writeConfigFile({ limits: { jobTimeoutSeconds: 120, requestTimeoutSeconds: 5 } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path }).limits).toEqual({ jobTimeoutSeconds: 120, requestTimeoutSeconds: 5 });
  });

  it('fills the default of a missing key', () => {
    const path = writeConfigFile({ limits: { requestTimeoutSeconds: 5 } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path }).limits.jobTimeoutSeconds).toBe(1800);
  });

  it('lets variables override the file', () => {
    const path = writeConfigFile({ limits: { jobTimeoutSeconds: 120, requestTimeoutSeconds: 5 } });
    const config = loadConfig({
      MIRRORFLEET_CONFIG: path,
      MIRRORFLEET_JOB_TIMEOUT_SECONDS: '900',
      MIRRORFLEET_REQUEST_TIMEOUT_SECONDS: '15',
    });

    expect(config.limits).toEqual({ jobTimeoutSeconds: 900, requestTimeoutSeconds: 15 });
  });

  it('keeps the file value that no variable sets', () => {
    const path = writeConfigFile({ limits: { jobTimeoutSeconds: 120, requestTimeoutSeconds: 5 } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_JOB_TIMEOUT_SECONDS: '900' }).limits.requestTimeoutSeconds).toBe(5);
  });

  for (const raw of ['0', '-1', '1.5', '30m', '', '604801']) {
    it(`rejects job timeout ${JSON.stringify(raw)}`, () => {
      expect(configErrorMessage({ MIRRORFLEET_JOB_TIMEOUT_SECONDS: raw })).toBe(
        `invalid configuration: MIRRORFLEET_JOB_TIMEOUT_SECONDS: invalid value ${JSON.stringify(raw)}; expected an integer from 1 to 604800 (seconds)`,
      );
    });
  }

  for (const raw of ['0', '3601', '1e3']) {
    it(`rejects request timeout ${JSON.stringify(raw)}`, () => {
      expect(configErrorMessage({ MIRRORFLEET_REQUEST_TIMEOUT_SECONDS: raw })).toBe(
        `invalid configuration: MIRRORFLEET_REQUEST_TIMEOUT_SECONDS: invalid value ${JSON.stringify(raw)}; expected an integer from 1 to 3600 (seconds)`,
      );
    });
  }

  it('rejects a file value as a string', () => {
    const path = writeConfigFile({ limits: { jobTimeoutSeconds: '60' } });

    expect(configErrorMessage({ MIRRORFLEET_CONFIG: path })).toContain('limits.jobTimeoutSeconds');
  });

  it('rejects an unknown key under limits', () => {
    const path = writeConfigFile({ limits: { jobTimeoutMinutes: 30 } });

    expect(configErrorMessage({ MIRRORFLEET_CONFIG: path })).toContain('limits.jobTimeoutMinutes');
  });
});
