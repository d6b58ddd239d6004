import { describe, expect, test } from 'vitest';
import { buildDedupeId, encryptBuildRequest, normaliseBuildRequest, parseBuildPayload, parseBuildRequest, type BuildRequestInput } from '../../queues/build.ts';
import { decryptValue, parseSecretKey } from '../../src/build/secret-key.ts';
import { InvalidInputError } from '../../src/errors.ts';

const KEY = parseSecretKey(Buffer.alloc(32, 3).toString('base64'));
const COMMIT = '0123456789abcdef0123456789abcdef01234567';

function request(overrides: Partial<BuildRequestInput> = {}): BuildRequestInput {
  return {
    v: 1,
    git: { url: '/srv/git/app', commit: COMMIT },
    variables: [
      { name: 'GREETING', value: 'hello' },
      { name: 'API_TOKEN', value: 'very-secret-value', secret: true },
    ],
    registry: 'Local',
    cluster: 'prod',
    service: 'web',
    ...overrides,
  };
}

describe('build request', () => {
  test('defaults and normal form', () => {
    const normal = normaliseBuildRequest(parseBuildRequest(request({ git: { url: '/srv/git/app', commit: COMMIT.toUpperCase(), root: './api/' }, platforms: ['linux/aarch64', 'linux/amd64'] })));

    expect(normal.git).toEqual({ url: '/srv/git/app', commit: COMMIT, root: 'api', dockerfile: 'Dockerfile' });
    expect(normal.registry).toBe('local');
    expect(normal.force).toBe(false);
    expect(normal.platforms).toEqual(['linux/amd64', 'linux/arm64']);
    expect(normal.variables.map((variable) => variable.name)).toEqual(['API_TOKEN', 'GREETING']);
  });

  test('invalid fields are named', () => {
    const attempt = () =>
      parseBuildRequest(request({ git: { url: 'ext::sh', commit: 'main', root: '../up' }, cluster: 'Prod', platforms: ['amd64'] }));

    expect(attempt).toThrow(InvalidInputError);
    expect(attempt).toThrow(/git\.url \("ext::sh"\)/);
    expect(attempt).toThrow(/git\.commit \("main"\)/);
    expect(attempt).toThrow(/git\.root \("\.\.\/up"\)/);
    expect(attempt).toThrow(/cluster \("Prod"\)/);
    expect(attempt).toThrow(/platforms\.0/);
  });

  test('unknown platform names are rejected', () => {
    const attempt = () => parseBuildRequest(request({ platforms: ['linux/amd64', 'linux/pentium', 'macos/arm64'] }));

    expect(attempt).toThrow(/platforms\.1 \("linux\/pentium"\): unknown architecture "pentium"/);
    expect(attempt).toThrow(/platforms\.2 \("macos\/arm64"\): unknown os "macos" \(did you mean darwin\/arm64\?\)/);
  });

  test('invalid variable never shows its value', () => {
    const attempt = () => parseBuildRequest(request({ variables: [{ name: 'BAD-NAME', value: 'secret-in-error', secret: true }] }));

    expect(attempt).toThrow(/variables\.0\.name: variable names must be/);
    expect(attempt).not.toThrow(/secret-in-error/);
  });

  test('repeated variable is rejected', () => {
    expect(() => parseBuildRequest(request({ variables: [{ name: 'A', value: '1' }, { name: 'A', value: '2' }] }))).toThrow(/variable A is given twice/);
  });

  test('service is required', () => {
    expect(() => parseBuildRequest({ ...request(), service: undefined })).toThrow(/service \(missing\)/);
  });
});

describe('build payload', () => {
  test('holds ciphertext only', () => {
    const payload = parseBuildPayload(encryptBuildRequest(normaliseBuildRequest(parseBuildRequest(request())), KEY));
    const text = JSON.stringify(payload);

    expect(text).not.toContain('very-secret-value');
    expect(text).not.toContain('hello');
    const token = payload.variables.find((variable) => variable.name === 'API_TOKEN')!;
    expect(token.secret).toBe(true);
    expect(decryptValue({ current: KEY }, token.name, token.secret, token.value)).toBe('very-secret-value');
  });

  test('variables without a key are rejected', () => {
    expect(() => encryptBuildRequest(normaliseBuildRequest(parseBuildRequest(request())), undefined)).toThrow(/MIRRORFLEET_SECRET_KEY/);
    expect(encryptBuildRequest(normaliseBuildRequest(parseBuildRequest(request({ variables: [] }))), undefined).variables).toEqual([]);
  });

  test('payload with a clear value is rejected', () => {
    const payload = { ...encryptBuildRequest(normaliseBuildRequest(parseBuildRequest(request())), KEY) };
    const tampered = { ...payload, variables: [{ name: 'A', secret: false, value: 'clear' }] };

    expect(() => parseBuildPayload(tampered)).toThrow(/variables\.0\.value/);
  });
});

describe('build dedupe id', () => {
  const id = (input: BuildRequestInput) => buildDedupeId(parseBuildRequest(input), KEY);

  test('same request gives the same id', () => {
    expect(id(request())).toBe(id(request({ registry: 'local', git: { url: '/srv/git/app', commit: COMMIT.toUpperCase() } })));
    expect(id(request())).toMatch(/^build-[0-9a-f]{32}$/);
  });

  test('any difference gives another id', () => {
    const base = id(request());

    expect(id(request({ service: 'api' }))).not.toBe(base);
    expect(id(request({ force: true }))).not.toBe(base);
    expect(id(request({ variables: [{ name: 'GREETING', value: 'hello' }, { name: 'API_TOKEN', value: 'other', secret: true }] }))).not.toBe(base);
  });
});
