import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import type { ArtifactRegistryMirrorRegistry } from '../../src/config/config.ts';
import { configFileSchema } from '../../src/config/config.ts';
import { RegistryError } from '../../src/errors.ts';
import { parseReference } from '../../src/image-ref/reference.ts';
import { RegistryClients } from '../../src/mirror/clients.ts';
import { ArtifactRegistryProvider, CLEANUP_POLICY_ID, createArtifactRegistryClient } from '../../src/providers/artifact-registry.ts';
import { RefreshingCredentials } from '../../src/providers/credentials.ts';
import { fetchServiceAccountToken, OAUTH_USERNAME } from '../../src/providers/google-tokens.ts';
import { HASH_LENGTH } from '../../src/providers/naming.ts';
import { transportFetch } from '../../src/providers/sdk-http.ts';
import type { HttpTransport } from '../../src/registry/http.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { startArStandIn, TEST_LOCATION, TEST_PROJECT, TEST_REPOSITORY, type ArStandIn } from './artifact-registry-standin.ts';
import { startRegistryProxy, type RegistryProxy } from './registry-proxy.ts';
import { setUpStandIn } from './helpers.ts';

const SERVICE = { mode: 'service' as const, cluster: 'prod', service: 'api' };
const DIGEST_A = `sha256:${'a'.repeat(64)}`;
const DIGEST_B = `sha256:${'b'.repeat(64)}`;
const WEEK = 7 * 86_400;

let transport: HttpTransport;
let standIn: ArStandIn;

setUpStandIn('Artifact Registry', startArStandIn, (context) => {
  transport = context.transport;
  standIn = context.standIn;
});

function registry(overrides: Partial<ArtifactRegistryMirrorRegistry> = {}): ArtifactRegistryMirrorRegistry {
  return {
    name: 'gcp',
    provider: 'artifact-registry',
    project: TEST_PROJECT,
    location: TEST_LOCATION,
    repository: TEST_REPOSITORY,
    host: `${TEST_LOCATION}-docker.pkg.dev`,
    prefix: `${TEST_PROJECT}/${TEST_REPOSITORY}`,
    retentionSeconds: WEEK,
    apiEndpoint: standIn.origin,
    ...overrides,
  };
}

function provider(overrides: Partial<ArtifactRegistryMirrorRegistry> = {}, now?: () => number): ArtifactRegistryProvider {
  const fetchFunction = transportFetch(transport);
  const tokens = new RefreshingCredentials(() => fetchServiceAccountToken(standIn.key, fetchFunction, now?.()), now ? { now } : {});
  const client = createArtifactRegistryClient({ apiEndpoint: standIn.origin, tokens, fetchFunction });
  return new ArtifactRegistryProvider({ registry: registry(overrides), insecure: true, client, tokens, writeIntervalMs: 0, visibilityDelaysMs: [10] });
}

const REPOSITORY_PATH = `/v1/projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/repositories/${TEST_REPOSITORY}`;

describe('ArtifactRegistryProvider naming', () => {
  test('places images under project and repository', () => {
    const target = provider().targetFor(parseReference('docker.io/library/nginx:1.27'), SERVICE);

    expect(target).toEqual({ repository: `${TEST_PROJECT}/${TEST_REPOSITORY}/prod/services/api/docker.io/library/nginx`, tag: '1.27' });
  });

  test('cuts long paths with a hash', () => {
    const long = 'b'.repeat(120);
    const first = provider().targetFor(parseReference(`registry.example/${long}/${long}/one:1`), SERVICE).repository;
    const second = provider().targetFor(parseReference(`registry.example/${long}/${long}/two:1`), SERVICE).repository;

    expect(first.length).toBeLessThanOrEqual(255);
    expect(first).toMatch(new RegExp(`^${TEST_PROJECT}/${TEST_REPOSITORY}/prod/services/api/registry\\.example/b+(/b*)?-[0-9a-f]{${HASH_LENGTH}}$`));
    expect(first).not.toBe(second);
  });

  test('maps a domain-scoped project', () => {
    const scoped = provider({ project: 'example.com:mirror-project', prefix: 'example.com/mirror-project/mirror' });

    expect(scoped.targetFor(parseReference('docker.io/library/nginx:1'), { mode: 'cluster', cluster: 'prod' }).repository).toBe(
      'example.com/mirror-project/mirror/prod/shared/docker.io/library/nginx',
    );
  });
});

describe('ArtifactRegistryProvider repository', () => {
  test('creates the repository with a cleanup policy', async () => {
    const ar = provider();

    await ar.ensureRepository('ignored');
    await ar.ensureRepository('ignored/again');

    expect(standIn.calls).toEqual(['POST /token', `GET ${REPOSITORY_PATH}`, `POST /v1/projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/repositories`]);
    const policy = standIn.repository!.cleanupPolicies[CLEANUP_POLICY_ID]!;
    expect([1, 'DELETE']).toContain(policy.action);
    expect([2, 'UNTAGGED']).toContain(policy.condition?.tagState);
    expect(policy.condition?.olderThan).toBe(`${WEEK}s`);
  });

  test('tolerates a repository created meanwhile', async () => {
    const ar = provider();
    standIn.failNext(`GET ${REPOSITORY_PATH}`, 404, 'NOT_FOUND');
    standIn.repository = { format: 'DOCKER', cleanupPolicies: { [CLEANUP_POLICY_ID]: { id: CLEANUP_POLICY_ID, action: 'DELETE', condition: { tagState: 'UNTAGGED', olderThan: `${WEEK}s` } } } };

    await ar.ensureRepository('x');

    expect(standIn.calls.slice(1)).toEqual([`GET ${REPOSITORY_PATH}`, `POST /v1/projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/repositories`, `GET ${REPOSITORY_PATH}`]);
  });

  test('updates the cleanup policy and keeps others', async () => {
    const other = { id: 'keep-recent', action: 'KEEP', condition: { tagState: 'ANY' } };
    standIn.repository = {
      format: 'DOCKER',
      cleanupPolicies: { 'keep-recent': other, [CLEANUP_POLICY_ID]: { id: CLEANUP_POLICY_ID, action: 'DELETE', condition: { tagState: 'UNTAGGED', olderThan: '86400s' } } },
    };

    await provider().ensureRepository('x');

    expect(standIn.calls.slice(1)).toEqual([`GET ${REPOSITORY_PATH}`, `PATCH ${REPOSITORY_PATH}`]);
    expect(standIn.repository.cleanupPolicies[CLEANUP_POLICY_ID]!.condition?.olderThan).toBe(`${WEEK}s`);
    expect(standIn.repository.cleanupPolicies['keep-recent']).toBeDefined();
  });

  test('names the permission when creation is denied', async () => {
    standIn.failNext(`POST /v1/projects/${TEST_PROJECT}/locations/${TEST_LOCATION}/repositories`, 403, 'PERMISSION_DENIED');

    const failure = await provider().ensureRepository('x').catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(RegistryError);
    expect((failure as RegistryError).code).toBe('REGISTRY_DENIED');
    expect((failure as RegistryError).message).toContain('artifactregistry.repositories.create');
  });
});

describe('ArtifactRegistryProvider credentials', () => {
  test('signs a JWT for an access token', async () => {
    const credentials = await provider().credentials();

    expect(credentials).toEqual({ username: OAUTH_USERNAME, password: standIn.accessTokens[0] });
  });

  test('renews the token before it expires', async () => {
    let now = Date.now();
    const ar = provider({}, () => now);

    await ar.credentials();
    await ar.credentials();
    now += 50 * 60_000;
    const renewed = await ar.credentials();

    expect(renewed.password).toBe(standIn.accessTokens[1]);
    expect(standIn.calls).toEqual(['POST /token', 'POST /token']);
  });

  test('renews the token once on a 401', async () => {
    const ar = provider();
    await ar.credentials();
    standIn.revoked.add(standIn.accessTokens[0]!);

    await ar.ensureRepository('x');

    expect(standIn.calls.slice(0, 4)).toEqual(['POST /token', `GET ${REPOSITORY_PATH} (401)`, 'POST /token', `GET ${REPOSITORY_PATH}`]);
  });
});

describe('ArtifactRegistryProvider deletion', () => {
  const packageName = 'prod/services/api/docker.io/library/nginx';
  const repository = `${TEST_PROJECT}/${TEST_REPOSITORY}/${packageName}`;

  test('deletes a tag that names the digest', async () => {
    standIn.tags.set(`${packageName}:1.27`, DIGEST_A);

    expect(await provider().deleteImage(repository, { tag: '1.27', digest: DIGEST_A })).toBe('deleted');
    expect(standIn.tags.size).toBe(0);
    // The stand-in shows paths decoded once, so the package id keeps its own percent-encoding.
    const tagPath = `${REPOSITORY_PATH}/packages/${encodeURIComponent(packageName)}/tags/1.27`;
    expect(standIn.calls.slice(1)).toEqual([`GET ${tagPath}`, `DELETE ${tagPath}`]);
  });

  test('keeps a tag that moved', async () => {
    standIn.tags.set(`${packageName}:1.27`, DIGEST_B);

    expect(await provider().deleteImage(repository, { tag: '1.27', digest: DIGEST_A })).toBe('absent');
    expect(standIn.tags.get(`${packageName}:1.27`)).toBe(DIGEST_B);
  });

  test('deletes an untagged version', async () => {
    standIn.versions.add(`${packageName}@${DIGEST_A}`);

    expect(await provider().deleteImage(repository, { digest: DIGEST_A })).toBe('deleted');
    expect(standIn.versions.size).toBe(0);
    expect(await provider().deleteImage(repository, { digest: DIGEST_A })).toBe('absent');
  });
});

describe('ArtifactRegistryProvider registry side', () => {
  let backend: TestRegistry;
  let proxy: RegistryProxy;

  beforeAll(async () => {
    backend = await startRegistry();
  });

  afterAll(async () => {
    await backend.stop();
  });

  beforeEach(async () => {
    proxy = await startRegistryProxy({
      backend: backend.url,
      auth: 'bearer',
      checkCredentials: (username, password) => (username === OAUTH_USERNAME && standIn.accessTokens.includes(password) && !standIn.revoked.has(password) ? 'valid' : 'invalid'),
      repositoryExists: () => standIn.repository !== undefined,
    });
  });

  afterEach(async () => {
    await proxy.close();
  });

  test('pushes through the token flow and creates the repository', async () => {
    const ar = provider({ host: proxy.host });
    const config = configFileSchema.parse({ registries: [{ host: proxy.host, insecure: true }, { host: backend.host, insecure: true }] });
    const clients = new RegistryClients(config, transport, { maxAttempts: 1 });
    clients.setProviderAccess(proxy.host, ar.access());
    await pushRandomImage(backend.url, 'source/app', '1', [1000]);
    const target = `${TEST_PROJECT}/${TEST_REPOSITORY}/app`;

    const start = await clients.get(proxy.host).startUpload(target);

    expect(start.mounted).toBe(false);
    expect(standIn.repository, 'created when the push found it missing').toBeDefined();
    expect(proxy.log.map((entry) => `${entry.method} ${entry.path.split('?')[0]} ${entry.status}`)).toEqual([
      `POST /v2/${target}/blobs/uploads/ 401`,
      'GET /v2/token 200',
      `POST /v2/${target}/blobs/uploads/ 404`,
      `POST /v2/${target}/blobs/uploads/ 202`,
    ]);
  });
});
