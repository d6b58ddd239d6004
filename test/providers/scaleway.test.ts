import { describe, expect, test } from 'vitest';
import { randomUUID } from 'node:crypto';
import type { ScalewayMirrorRegistry } from '../../src/config/config.ts';
import { ConfigError } from '../../src/errors.ts';
import { parseReference } from '../../src/image-ref/reference.ts';
import { HASH_LENGTH } from '../../src/providers/naming.ts';
import { createScalewayApi, namespaceName, NAMESPACE_RULES, readSecretKey, ScalewayProvider } from '../../src/providers/scaleway.ts';
import { transportFetch } from '../../src/providers/sdk-http.ts';
import type { HttpTransport } from '../../src/registry/http.ts';
import { startScalewayStandIn, TEST_PROJECT_ID, TEST_REGION, TEST_SECRET_KEY, type ScalewayStandIn } from './scaleway-standin.ts';
import { setUpStandIn } from './helpers.ts';

const DIGEST_A = `sha256:${'a'.repeat(64)}`;
const DIGEST_B = `sha256:${'b'.repeat(64)}`;
const NAMESPACES = `/registry/v1/regions/${TEST_REGION}/namespaces`;

let transport: HttpTransport;
let standIn: ScalewayStandIn;

setUpStandIn('Scaleway', startScalewayStandIn, (context) => {
  transport = context.transport;
  standIn = context.standIn;
});

function provider(prefix = ''): ScalewayProvider {
  const registry: ScalewayMirrorRegistry = {
    name: 'scw',
    provider: 'scaleway',
    region: TEST_REGION,
    projectId: TEST_PROJECT_ID,
    secretKey: { env: 'SCW_SECRET_KEY' },
    host: `rg.${TEST_REGION}.scw.cloud`,
    prefix,
    retentionSeconds: 86_400,
  };
  const api = createScalewayApi({ apiEndpoint: standIn.origin, registry, secretKey: TEST_SECRET_KEY, fetchFunction: transportFetch(transport) });
  return new ScalewayProvider({ registry, insecure: true, api, secretKey: TEST_SECRET_KEY, requestIntervalMs: 0, readyPoll: { minDelaySeconds: 1, maxDelaySeconds: 1, timeoutSeconds: 10 } });
}

describe('Scaleway namespace names', () => {
  const hashed = new RegExp(`-[0-9a-f]{${HASH_LENGTH}}$`);

  test('joins plain ids with hyphens', () => {
    expect(namespaceName('', { mode: 'service', cluster: 'prod', service: 'api' })).toBe('prod-api');
    expect(namespaceName('team/mirror', { mode: 'service', cluster: 'prod', service: 'api' })).toBe('team-mirror-prod-api');
    expect(namespaceName('', { mode: 'cluster', cluster: 'prod' })).toBe('prod');
  });

  test('hashes ids that contain separators', () => {
    const first = namespaceName('', { mode: 'service', cluster: 'a-b', service: 'cd' });
    const second = namespaceName('', { mode: 'service', cluster: 'a', service: 'b-cd' });

    expect(first).toMatch(hashed);
    expect(first).not.toBe(second);
  });

  test('fits the 4 to 50 character limit', () => {
    const short = namespaceName('', { mode: 'cluster', cluster: 'ab' });
    const long = namespaceName('', { mode: 'service', cluster: 'c'.repeat(40), service: 's'.repeat(40) });

    expect(short.length).toBeGreaterThanOrEqual(NAMESPACE_RULES.minLength!);
    expect(short).toMatch(hashed);
    expect(long.length).toBeLessThanOrEqual(NAMESPACE_RULES.maxLength);
    expect(long).toMatch(/^[a-z0-9]+(?:-[a-z0-9]+)*$/);
  });

  test('keeps the source path after the namespace', () => {
    const target = provider().targetFor(parseReference('docker.io/library/nginx:1.27'), { mode: 'service', cluster: 'prod', service: 'api' });

    expect(target).toEqual({ repository: 'prod-api/docker.io/library/nginx', tag: '1.27' });
  });
});

describe('ScalewayProvider namespaces', () => {
  test('creates a private namespace and waits until ready', async () => {
    const scw = provider();

    await Promise.all([scw.ensureRepository('prod-api/docker.io/library/nginx'), scw.ensureRepository('prod-api/docker.io/library/redis')]);

    const poll = `GET ${NAMESPACES}/${standIn.namespaces[0]!.id}`;
    expect(standIn.calls, 'polled until ready, one namespace for both').toEqual([`GET ${NAMESPACES}`, `POST ${NAMESPACES}`, poll, poll]);
    expect(standIn.namespaces).toMatchObject([{ name: 'prod-api', isPublic: false, status: 'ready' }]);
  });

  test('tolerates a namespace created meanwhile', async () => {
    standIn.failNext(`POST ${NAMESPACES}`, 409, 'conflict', () => standIn.namespaces.push({ id: randomUUID(), name: 'prod-api', status: 'ready', isPublic: false }));

    await provider().ensureRepository('prod-api/app');

    expect(standIn.calls).toEqual([`GET ${NAMESPACES}`, `POST ${NAMESPACES}`, `GET ${NAMESPACES}`]);
  });

  test('pushes as nologin with the secret key', async () => {
    expect(await provider().credentials()).toEqual({ username: 'nologin', password: TEST_SECRET_KEY });
  });

  test('reads the secret key from the environment', () => {
    expect(readSecretKey({ env: 'SCW_TEST_KEY' }, { SCW_TEST_KEY: TEST_SECRET_KEY })).toBe(TEST_SECRET_KEY);
    expect(() => readSecretKey({ env: 'SCW_TEST_KEY' }, {})).toThrow(ConfigError);
  });
});

describe('ScalewayProvider deletion', () => {
  function seed(tags: { name: string; digest: string }[]) {
    const namespaceId = randomUUID();
    standIn.namespaces.push({ id: namespaceId, name: 'prod-api', status: 'ready', isPublic: false });
    standIn.images.push({ id: randomUUID(), namespaceId, name: 'docker.io/library/nginx', tags: tags.map((tag) => ({ id: randomUUID(), ...tag })) });
  }

  test('deletes a tag that names the digest', async () => {
    seed([{ name: '1.27', digest: DIGEST_A }, { name: '1.28', digest: DIGEST_B }]);

    expect(await provider().deleteImage('prod-api/docker.io/library/nginx', { tag: '1.27', digest: DIGEST_A })).toBe('deleted');
    expect(standIn.images[0]!.tags.map((tag) => tag.name)).toEqual(['1.28']);
  });

  test('keeps a tag that moved', async () => {
    seed([{ name: '1.27', digest: DIGEST_B }]);

    expect(await provider().deleteImage('prod-api/docker.io/library/nginx', { tag: '1.27', digest: DIGEST_A })).toBe('absent');
    expect(standIn.images[0]!.tags).toHaveLength(1);
  });

  test('deletes the image with its last digest', async () => {
    seed([{ name: 'at-sha256-a', digest: DIGEST_A }]);

    expect(await provider().deleteImage('prod-api/docker.io/library/nginx', { digest: DIGEST_A })).toBe('deleted');
    expect(standIn.images).toEqual([]);
    expect(await provider().deleteImage('prod-api/docker.io/library/nginx', { digest: DIGEST_A })).toBe('absent');
  });
});
