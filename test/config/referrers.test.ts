import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/config.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { mirrorDedupeId, normaliseMirrorRequest, parseMirrorRequest } from '../../queues/mirror.ts';
import { configErrorMessage, setUpConfigDirectory } from './helpers.ts';

const { writeConfigFile } = setUpConfigDirectory('referrers');

describe('mirror registry referrer keys', () => {
  it('are absent unless the file sets them', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'local', provider: 'generic', host: 'r.example' }] });
    const [registry] = loadConfig({ MIRRORFLEET_CONFIG: path }).mirrorRegistries;

    expect(registry?.referrers).toBeUndefined();
    expect(registry?.referrerFailures).toBeUndefined();
  });

  it('are read for generic and cloud registries', () => {
    const path = writeConfigFile({
      mirrorRegistries: [
        { name: 'local', provider: 'generic', host: 'r.example', referrers: 'signatures', referrerFailures: 'fail' },
        { name: 'aws', provider: 'ecr', account: '123456789012', region: 'eu-west-1', referrers: 'off' },
      ],
    });
    const [local, aws] = loadConfig({ MIRRORFLEET_CONFIG: path }).mirrorRegistries;

    expect(local?.referrers).toBe('signatures');
    expect(local?.referrerFailures).toBe('fail');
    expect(aws?.referrers).toBe('off');
  });

  it('rejects an unknown selection naming the choices', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'local', provider: 'generic', host: 'r.example', referrers: 'sboms' }] });

    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(message).toContain('mirrorRegistries.0.referrers');
    expect(message).toContain('"sboms"');
    expect(message).toContain('one of off, signatures, all');
  });

  it('rejects an unknown failure policy naming the choices', () => {
    const path = writeConfigFile({ mirrorRegistries: [{ name: 'local', provider: 'generic', host: 'r.example', referrerFailures: 'ignore' }] });

    const message = configErrorMessage({ MIRRORFLEET_CONFIG: path });

    expect(message).toContain('mirrorRegistries.0.referrerFailures');
    expect(message).toContain('one of report, fail');
  });
});

describe('mirror job referrers option', () => {
  const request = { v: 1, source: 'registry.example/app:1', registry: 'local', mode: 'cluster', cluster: 'prod' };

  it('is absent unless the job sets it', () => {
    expect(parseMirrorRequest(request).referrers).toBeUndefined();
    expect(parseMirrorRequest({ ...request, referrers: 'signatures' }).referrers).toBe('signatures');
  });

  it('rejects an unknown selection naming the field', () => {
    let error: unknown;
    try {
      parseMirrorRequest({ ...request, referrers: 'everything' });
    } catch (caught) {
      error = caught;
    }

    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toContain('referrers ("everything")');
    expect((error as Error).message).toContain('"off", "signatures", "all"');
  });

  it('survives normalisation', () => {
    expect(normaliseMirrorRequest(parseMirrorRequest({ ...request, referrers: 'off' })).referrers).toBe('off');
  });

  it('separates deduplication ids only when set', () => {
    const plain = mirrorDedupeId(parseMirrorRequest(request));

    expect(mirrorDedupeId(parseMirrorRequest({ ...request, referrers: 'off' }))).not.toBe(plain);
    expect(mirrorDedupeId(parseMirrorRequest({ ...request, referrers: 'all' }))).not.toBe(plain);
    // The id of a request without the option is the one it had before the option existed.
    expect(plain).toBe('mirror-353447daa38a338afa72327a6a7c34c6');
  });
});
