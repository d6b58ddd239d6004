import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { configErrorMessage, setUpConfigDirectory } from './helpers.ts';

const { writeConfigFile } = setUpConfigDirectory('cleanup');

describe('mirror registry cleanup keys', () => {
  it('default to one year, 24 hours and 50 percent', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'local', provider: 'generic', host: 'r.example' }] });
    const [registry] = loadConfig({ MIRRORFLEET_CONFIG: path }).mirrorRegistries;

    expect(registry?.retentionSeconds).toBe(365 * 86_400);
    expect(registry?.previousImageRetentionSeconds).toBe(86_400);
    expect(registry?.maxDeletePercent).toBe(50);
  });

  it('get the same defaults from MIRRORFLEET_MIRROR_REGISTRIES', () => {
    const [registry] = loadConfig({ MIRRORFLEET_MIRROR_REGISTRIES: 'local=r.example' }).mirrorRegistries;

    expect(registry?.retentionSeconds).toBe(365 * 86_400);
    expect(registry?.previousImageRetentionSeconds).toBe(86_400);
    expect(registry?.maxDeletePercent).toBe(50);
  });

  it('are read from the file, zero included', () => {
    const path = writeConfigFile({
      mirrorRegistries: [{ name: 'local', provider: 'generic', host: 'r.example', retentionSeconds: 0, previousImageRetentionSeconds: 0, maxDeletePercent: 100 }],
    });
    const [registry] = loadConfig({ MIRRORFLEET_CONFIG: path }).mirrorRegistries;

    expect(registry?.retentionSeconds).toBe(0);
    expect(registry?.previousImageRetentionSeconds).toBe(0);
    expect(registry?.maxDeletePercent).toBe(100);
  });

  it('rejects a share above 100 percent', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'local', provider: 'generic', host: 'r.example', maxDeletePercent: 150 }] });

    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(message).toContain('mirrorRegistries.0.maxDeletePercent');
    expect(message).toContain('150');
    expect(message).toContain('an integer from 0 to 100');
  });

  it('rejects a previous-image retention in milliseconds', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'local', provider: 'generic', host: 'r.example', previousImageRetentionSeconds: 86_400_000_000 }] });

    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(message).toContain('mirrorRegistries.0.previousImageRetentionSeconds');
    expect(message).toContain('an integer from 0 to 315360000 (seconds)');
  });
});

describe('cleanup section', () => {
  it('defaults to no schedule and 100000 audit entries', () => {
    expect(loadConfig({}).cleanup).toEqual({ sweepIntervalSeconds: 0, auditMaxEntries: 100_000 });
  });

  it('reads both keys from the file', () => {
    const path = writeConfigFile({ cleanup: { sweepIntervalSeconds: 3600, auditMaxEntries: 5000 } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path }).cleanup).toEqual({ sweepIntervalSeconds: 3600, auditMaxEntries: 5000 });
  });

  it('takes the interval from MIRRORFLEET_SWEEP_INTERVAL_SECONDS', () => {
    const path = writeConfigFile({ cleanup: { sweepIntervalSeconds: 3600 } });

    expect(loadConfig({ MIRRORFLEET_CONFIG: path, MIRRORFLEET_SWEEP_INTERVAL_SECONDS: '600' }).cleanup.sweepIntervalSeconds).toBe(600);
  });

  it('rejects an interval that is not a whole number', () => {
    const message = configErrorMessage({ MIRRORFLEET_SWEEP_INTERVAL_SECONDS: '1h' });

    expect(message).toContain('MIRRORFLEET_SWEEP_INTERVAL_SECONDS');
    expect(message).toContain('"1h"');
    expect(message).toContain('seconds between scheduled sweeps; 0 turns them off');
  });

  it('rejects an unknown key naming the known ones', () => {
    const message = configErrorMessage({ MIRRORFLEET_CONFIG: writeConfigFile({ cleanup: { interval: 5 } }) });

    expect(message).toContain('cleanup.interval');
    expect(message).toContain('one of the keys sweepIntervalSeconds, auditMaxEntries');
  });
});
