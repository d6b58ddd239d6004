import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { configErrorMessage, setUpConfigDirectory } from './helpers.ts';

const { writeConfigFile } = setUpConfigDirectory('rate-limits');

describe('rateLimits', () => {
  it('is absent unless set', () => {
    expect('rateLimits' in loadConfig({})).toBe(false);
  });

  it('reads the file section and fills defaults', () => {
    const path = writeConfigFile({ rateLimits: { hosts: [{ host: 'Quay.IO:443', requestsPerSecond: 2.5 }, { host: 'docker.io', pullQuotaFloor: 20, maxConcurrent: 4, burst: 8 }] } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path }).rateLimits).toEqual({
      enabled: true,
      maxWaitSeconds: 900,
      hosts: [
        { host: 'quay.io', requestsPerSecond: 2.5 },
        { host: 'docker.io', pullQuotaFloor: 20, maxConcurrent: 4, burst: 8 },
      ],
    });
  });

  it('reads enabled and maxWaitSeconds', () => {
    const path = writeConfigFile({ rateLimits: { enabled: false, maxWaitSeconds: 60 } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path }).rateLimits).toEqual({ enabled: false, maxWaitSeconds: 60, hosts: [] });
  });

  it('variable replaces the entry of its host', () => {
    const path = writeConfigFile({ rateLimits: { maxWaitSeconds: 60, hosts: [{ host: 'docker.io', requestsPerSecond: 2 }, { host: 'ghcr.io', burst: 3 }] } });

    const config = loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_RATE_LIMITS: '{"Docker.io": {"maxConcurrent": 2}, "quay.io": {"requestsPerSecond": 1}}' });

    expect(config.rateLimits).toEqual({
      enabled: true,
      maxWaitSeconds: 60,
      hosts: [
        { host: 'ghcr.io', burst: 3 },
        { host: 'docker.io', maxConcurrent: 2 },
        { host: 'quay.io', requestsPerSecond: 1 },
      ],
    });
  });

  it('variable alone creates the section', () => {
    const config = loadConfig({ MIRRORFLEET_RATE_LIMITS: '{"127.0.0.1:5000": {"requestsPerSecond": 5, "pullQuotaFloor": 3}}' });

    expect(config.rateLimits).toEqual({ enabled: true, maxWaitSeconds: 900, hosts: [{ host: '127.0.0.1:5000', requestsPerSecond: 5, pullQuotaFloor: 3 }] });
  });

  it('variable sets the bounds of the adaptive rate', () => {
    const config = loadConfig({ MIRRORFLEET_RATE_LIMITS: '{"quay.io": {"requestsPerSecond": 8, "minRequestsPerSecond": 0.5, "rateRecoveryPerSecond": 0.2}}' });

    expect(config.rateLimits?.hosts).toEqual([{ host: 'quay.io', requestsPerSecond: 8, minRequestsPerSecond: 0.5, rateRecoveryPerSecond: 0.2 }]);
  });

  const fileCases: [string, unknown, string][] = [
    [
      'zero rate',
      { hosts: [{ host: 'docker.io', requestsPerSecond: 0 }] },
      'rateLimits.hosts.0.requestsPerSecond: invalid value 0; expected a number from 0.01 to 100000 (requests per second, fleet-wide)',
    ],
    [
      'fractional burst',
      { hosts: [{ host: 'docker.io', burst: 1.5 }] },
      'rateLimits.hosts.0.burst: invalid value 1.5; expected an integer from 1 to 1000000 (requests sent at once after an idle time)',
    ],
    [
      'duplicate host',
      { hosts: [{ host: 'quay.io' }, { host: 'QUAY.io' }] },
      'rateLimits.hosts.1.host: invalid value "quay.io"; expected a host not already listed at rateLimits.hosts.0',
    ],
    [
      'wait of zero seconds',
      { maxWaitSeconds: 0 },
      'rateLimits.maxWaitSeconds: invalid value 0; expected an integer from 1 to 604800 (seconds one registry request may wait for the request budget)',
    ],
  ];

  for (const [label, section, problem] of fileCases) {
    it(`rejects ${label}`, () => {
      const path = writeConfigFile({ rateLimits: section });

      expect(configErrorMessage({ MIRRORFLEET_CONFIG: path })).toBe(`invalid configuration (file ${JSON.stringify(path)}): ${problem}`);
    });
  }

  it('rejects an unknown key', () => {
    const path = writeConfigFile({ rateLimits: { hosts: [{ host: 'docker.io', rps: 5 }] } });

    expect(configErrorMessage({ MIRRORFLEET_CONFIG: path })).toContain('rateLimits.hosts.0.rps: unknown key; expected one of the keys host, requestsPerSecond, burst, maxConcurrent, pullQuotaFloor, minRequestsPerSecond, rateRecoveryPerSecond');
  });

  const variableCases: [string, string, string][] = [
    [
      'invalid JSON',
      '{docker.io: 5}',
      'MIRRORFLEET_RATE_LIMITS: invalid JSON "{docker.io: 5}"; expected a JSON object of request budgets by registry host, such as {"docker.io": {"requestsPerSecond": 5, "maxConcurrent": 4, "pullQuotaFloor": 20}}',
    ],
    ['invalid host', '{"https://docker.io": {}}', 'MIRRORFLEET_RATE_LIMITS["https://docker.io"]: invalid host "https://docker.io"'],
    [
      'zero recovery',
      '{"docker.io": {"rateRecoveryPerSecond": 0}}',
      'MIRRORFLEET_RATE_LIMITS["docker.io"].rateRecoveryPerSecond: invalid value 0',
    ],
    [
      'negative floor',
      '{"docker.io": {"pullQuotaFloor": -1}}',
      'MIRRORFLEET_RATE_LIMITS["docker.io"].pullQuotaFloor: invalid value -1; expected an integer from 0 to 1000000 (pulls left below which manifest GETs pause; 0 turns the pause off)',
    ],
  ];

  for (const [label, raw, problem] of variableCases) {
    it(`variable rejects ${label}`, () => {
      expect(configErrorMessage({ MIRRORFLEET_RATE_LIMITS: raw })).toContain(problem);
    });
  }
});
