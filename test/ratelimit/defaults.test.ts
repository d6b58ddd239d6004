import { Redis } from 'ioredis';
import { describe, expect, test } from 'vitest';
import { configFileSchema, type Config } from '../../src/config/config.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { OTHER_HOSTS } from '../../src/ratelimit/defaults.ts';
import { createRegistryGates, hostLimits } from '../../src/ratelimit/registry-gates.ts';

describe('built-in budgets', () => {
  test.each([
    ['docker.io', { requestsPerSecond: 10, burst: 20, maxConcurrent: 8, pullQuotaFloor: 5 }],
    ['ghcr.io', { requestsPerSecond: 10, burst: 20, maxConcurrent: 8, pullQuotaFloor: 0 }],
    ['quay.io', { requestsPerSecond: 5, burst: 10, maxConcurrent: 6, pullQuotaFloor: 0 }],
    ['123456789012.dkr.ecr.eu-west-1.amazonaws.com', { requestsPerSecond: 10, burst: 40, maxConcurrent: 16, pullQuotaFloor: 0 }],
    ['123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn', { requestsPerSecond: 10, burst: 40, maxConcurrent: 16, pullQuotaFloor: 0 }],
    ['europe-west4-docker.pkg.dev', { requestsPerSecond: 30, burst: 60, maxConcurrent: 32, pullQuotaFloor: 0 }],
    ['rg.fr-par.scw.cloud', { requestsPerSecond: 10, burst: 20, maxConcurrent: 8, pullQuotaFloor: 0 }],
    ['registry.example:5000', OTHER_HOSTS],
  ])('%s', (host, limits) => {
    expect(hostLimits(host)).toEqual(limits);
  });

  test('Docker Hub aliases share its budget', () => {
    expect(hostLimits('registry-1.docker.io')).toEqual(hostLimits('docker.io'));
    expect(hostLimits('index.docker.io')).toEqual(hostLimits('docker.io'));
  });

  test('configured keys replace built-in ones', () => {
    const rateLimits = { enabled: true, maxWaitSeconds: 900, hosts: [{ host: 'registry-1.docker.io', requestsPerSecond: 2, pullQuotaFloor: 40 }] };

    expect(hostLimits('docker.io', rateLimits)).toEqual({ requestsPerSecond: 2, burst: 20, maxConcurrent: 8, pullQuotaFloor: 40 });
    expect(hostLimits('quay.io', rateLimits)).toEqual({ requestsPerSecond: 5, burst: 10, maxConcurrent: 6, pullQuotaFloor: 0 });
  });

  test('configured bounds of the adaptive rate apply', () => {
    const rateLimits = { enabled: true, maxWaitSeconds: 900, hosts: [{ host: 'quay.io', minRequestsPerSecond: 0.5, rateRecoveryPerSecond: 0.2 }] };

    expect(hostLimits('quay.io', rateLimits)).toEqual({
      requestsPerSecond: 5,
      burst: 10,
      maxConcurrent: 6,
      pullQuotaFloor: 0,
      minRequestsPerSecond: 0.5,
      rateRecoveryPerSecond: 0.2,
    });
  });
});

describe('worker gates', () => {
  // No command reaches Redis in these tests: the connection is never opened.
  const redis = new Redis({ lazyConnect: true });
  const metrics = new Metrics({ defaultMetrics: false });

  test('none when disabled', () => {
    const config: Config = { ...configFileSchema.parse({}), rateLimits: { enabled: false, maxWaitSeconds: 900, hosts: [] } };

    expect(createRegistryGates({ config, redis, metrics })).toBeUndefined();
  });

  test('on by default, with the wait limit and host budget', () => {
    const config: Config = { ...configFileSchema.parse({}), rateLimits: { enabled: true, maxWaitSeconds: 42, hosts: [{ host: 'quay.io', maxConcurrent: 3 }] } };
    const withoutSection: Config = configFileSchema.parse({});

    const gate = createRegistryGates({ config, redis, metrics })?.gateFor('quay.io');

    expect(createRegistryGates({ config: withoutSection, redis, metrics })).toBeDefined();
    expect(gate?.maxWaitMs).toBe(42_000);
    expect(gate?.budget.limits.maxConcurrent).toBe(3);
    expect(gate?.windowLimit('blob-read')).toBe(3);
  });
});
