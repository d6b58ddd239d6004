import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { RegistryError } from '../../src/errors.ts';
import { parseReference } from '../../src/image-ref/reference.ts';
import { EcrProvider, ECR_NAME_RULES } from '../../src/providers/ecr.ts';
import { HASH_LENGTH } from '../../src/providers/naming.ts';
import { copyImage } from '../../src/registry/copy.ts';
import type { HttpTransport } from '../../src/registry/http.ts';
import { RegistryClients } from '../../src/mirror/clients.ts';
import { configFileSchema } from '../../src/config/config.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectDigest } from '../harness/skopeo.ts';
import { startEcrStandIn, type EcrStandIn } from './ecr-standin.ts';
import { startRegistryProxy, type RegistryProxy } from './registry-proxy.ts';
import { setUpStandIn } from './helpers.ts';
import { ecrRegistry, testEcrClient } from './setup.ts';

const ECR_PATTERN = /^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*\/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const NGINX = parseReference('docker.io/library/nginx:1.27');
const SERVICE = { mode: 'service' as const, cluster: 'prod', service: 'api' };
const DIGEST_A = `sha256:${'a'.repeat(64)}`;
const DIGEST_B = `sha256:${'b'.repeat(64)}`;
const INDEX_TYPE = 'application/vnd.oci.image.index.v1+json';
const MANIFEST_TYPE = 'application/vnd.oci.image.manifest.v1+json';

let transport: HttpTransport;
let standIn: EcrStandIn;

setUpStandIn('ECR', startEcrStandIn, (context) => {
  transport = context.transport;
  standIn = context.standIn;
});

function provider(options: { retentionSeconds?: number; host?: string; now?: () => number } = {}): EcrProvider {
  return new EcrProvider({
    registry: ecrRegistry({ ...(options.retentionSeconds ? { retentionSeconds: options.retentionSeconds } : {}), ...(options.host ? { host: options.host } : {}) }),
    insecure: true,
    ecr: testEcrClient(standIn.origin, transport),
    visibilityDelaysMs: [10, 10],
    ...(options.now ? { now: options.now } : {}),
  });
}

function lifecycleRules(text: unknown): { rulePriority: number; description?: string; selection: Record<string, unknown> }[] {
  return (JSON.parse(String(text)) as { rules: { rulePriority: number; description?: string; selection: Record<string, unknown> }[] }).rules;
}

describe('EcrProvider naming', () => {
  test('keeps a name that fits', () => {
    const target = provider().targetFor(NGINX, SERVICE);

    expect(target).toEqual({ repository: 'mirror/prod/services/api/docker.io/library/nginx', tag: '1.27' });
  });

  test('replaces double separators and adds a hash', () => {
    const ecr = provider();
    const doubled = ecr.targetFor(parseReference('registry.example/team/my__app:1'), SERVICE).repository;
    const single = ecr.targetFor(parseReference('registry.example/team/my_app:1'), SERVICE).repository;

    expect(doubled).toMatch(new RegExp(`^mirror/prod/services/api/registry\\.example/team/my-app-[0-9a-f]{${HASH_LENGTH}}$`));
    expect(doubled).toMatch(ECR_PATTERN);
    expect(single).toBe('mirror/prod/services/api/registry.example/team/my_app');
  });

  test('cuts long names to 256 characters', () => {
    const long = 'a'.repeat(120);
    const first = provider().targetFor(parseReference(`registry.example/${long}/${long}/one:1`), SERVICE).repository;
    const second = provider().targetFor(parseReference(`registry.example/${long}/${long}/two:1`), SERVICE).repository;

    expect(first.length).toBeLessThanOrEqual(ECR_NAME_RULES.maxLength);
    expect(first).toMatch(ECR_PATTERN);
    expect(first).not.toBe(second);
  });

  test('tags a digest-only source', () => {
    const target = provider().targetFor(parseReference(`docker.io/library/nginx@${DIGEST_A}`), { mode: 'cluster', cluster: 'prod' });

    expect(target).toEqual({ repository: 'mirror/prod/shared/docker.io/library/nginx', tag: `at-sha256-${'a'.repeat(64)}` });
  });
});

describe('EcrProvider repositories', () => {
  test('creates with tags and lifecycle policy', async () => {
    const ecr = provider();
    const { repository } = ecr.targetFor(NGINX, SERVICE);

    await ecr.ensureRepository(repository);

    expect(standIn.calls).toEqual(['CreateRepository', 'PutLifecyclePolicy']);
    expect(standIn.bodies[0]!.tags).toEqual([
      { Key: 'created-by', Value: 'mirrorfleet' },
      { Key: 'cluster', Value: 'prod' },
      { Key: 'service', Value: 'api' },
    ]);
    const rules = lifecycleRules(standIn.repositories.get(repository)!.lifecyclePolicyText);
    expect(rules).toHaveLength(1);
    expect(rules[0]!.selection).toEqual({ tagStatus: 'untagged', countType: 'sinceImagePushed', countUnit: 'days', countNumber: 7 });
  });

  test('creates once for concurrent jobs', async () => {
    const ecr = provider();

    await Promise.all(Array.from({ length: 5 }, () => ecr.ensureRepository('mirror/shared-one')));
    await ecr.ensureRepository('mirror/shared-one');

    expect(standIn.calls).toEqual(['CreateRepository', 'PutLifecyclePolicy']);
  });

  test('tolerates a repository another worker created', async () => {
    const ecr = provider();
    standIn.repositories.set('mirror/raced', { tags: [], images: [], lifecyclePolicyText: JSON.stringify({ rules: [ecr.lifecycleRule()] }) });

    await ecr.ensureRepository('mirror/raced');

    expect(standIn.calls, 'the current policy is left as it is').toEqual(['CreateRepository', 'GetLifecyclePolicy']);
  });

  test('updates the policy when retention changed', async () => {
    const foreign = { rulePriority: 1, description: 'team rule', selection: { tagStatus: 'tagged', tagPrefixList: ['tmp'], countType: 'imageCountMoreThan', countNumber: 5 }, action: { type: 'expire' } };
    const old = provider({ retentionSeconds: 3 * 86_400 }).lifecycleRule();
    standIn.repositories.set('mirror/existing', { tags: [], images: [], lifecyclePolicyText: JSON.stringify({ rules: [foreign, { ...old, rulePriority: 2 }] }) });

    await provider({ retentionSeconds: 10 * 86_400 }).ensureRepository('mirror/existing');

    expect(standIn.calls).toEqual(['CreateRepository', 'GetLifecyclePolicy', 'PutLifecyclePolicy']);
    const rules = lifecycleRules(standIn.repositories.get('mirror/existing')!.lifecyclePolicyText);
    expect(rules.map((rule) => [rule.rulePriority, rule.description])).toEqual([
      [1, 'mirrorfleet: expire untagged images 10 days after push'],
      [2, 'team rule'],
    ]);
    expect(rules[0]!.selection.countNumber).toBe(10);
  });

  test('names the permission when creation is denied', async () => {
    standIn.failNext('CreateRepository', 'AccessDeniedException');

    const failure = await provider().ensureRepository('mirror/denied').catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(RegistryError);
    expect((failure as RegistryError).code).toBe('REGISTRY_DENIED');
    expect((failure as RegistryError).retryable).toBe(false);
    expect((failure as RegistryError).message).toContain('ecr:CreateRepository');
  });

  test('marks throttling as retryable', async () => {
    standIn.failNext('CreateRepository', 'ThrottlingException');

    const failure = (await provider().ensureRepository('mirror/busy').catch((error: unknown) => error)) as RegistryError;

    expect(failure.code).toBe('REGISTRY_RATE_LIMITED');
    expect(failure.retryable).toBe(true);
  });
});

describe('EcrProvider credentials', () => {
  test('renews the token before it expires', async () => {
    let now = Date.now();
    const ecr = provider({ now: () => now });

    const first = await ecr.credentials();
    const cached = await ecr.credentials();
    now += 11 * 3600_000 + 50 * 60_000;
    const renewed = await ecr.credentials();

    expect(first.username).toBe('AWS');
    expect(first.password).toBe(standIn.tokens[0]);
    expect(cached).toEqual(first);
    expect(renewed.password).toBe(standIn.tokens[1]);
    expect(standIn.calls).toEqual(['GetAuthorizationToken', 'GetAuthorizationToken']);
  });
});

describe('EcrProvider registry side', () => {
  let backend: TestRegistry;
  let proxy: RegistryProxy;
  let expiredOn: (method: string, token: string) => boolean;
  let visible: (repository: string) => boolean;
  let requests: { method: string; token: string }[];

  beforeAll(async () => {
    backend = await startRegistry();
  });

  afterAll(async () => {
    await backend.stop();
  });

  beforeEach(async () => {
    expiredOn = () => false;
    visible = (repository) => standIn.repositories.has(repository);
    requests = [];
    proxy = await startRegistryProxy({
      backend: backend.url,
      auth: 'basic',
      checkCredentials: (username, password, request) => {
        requests.push({ method: request.method, token: password });
        if (username !== 'AWS' || !standIn.tokens.includes(password)) return 'invalid';
        return expiredOn(request.method, password) ? 'expired' : 'valid';
      },
      repositoryExists: (repository) => visible(repository),
    });
  });

  afterEach(async () => {
    await proxy.close();
  });

  /** RegistryClients whose target host gets the provider's access, as createProvider sets it up. */
  function clientsFor(ecr: EcrProvider): RegistryClients {
    const config = configFileSchema.parse({ registries: [{ host: proxy.host, insecure: true }, { host: backend.host, insecure: true }] });
    const clients = new RegistryClients(config, transport, { maxAttempts: 1 });
    clients.setProviderAccess(ecr.host, ecr.access());
    return clients;
  }

  test('renews an expired token mid chunked upload', async () => {
    const ecr = provider({ host: proxy.host });
    const clients = clientsFor(ecr);
    const sourceDigest = await pushRandomImage(backend.url, 'source/app', '1', [300_000]);
    await ecr.ensureRepository('mirror/app');
    expiredOn = (method, token) => method === 'PATCH' && token === standIn.tokens[0];

    const result = await copyImage(
      { client: clients.get(backend.host), repository: 'source/app', tag: '1' },
      { client: clients.get(proxy.host), repository: 'mirror/app', tag: '1' },
      { monolithicMaxBytes: 0, chunkBytes: 64 * 1024 },
    );

    expect(result.targetDigest).toBe(sourceDigest);
    const rejected = proxy.log.filter((entry) => entry.method === 'PATCH' && entry.status === 403);
    expect(rejected.length, 'PATCHes that met the expired token').toBeGreaterThan(0);
    expect(rejected.length, 'each blob started over once').toBeLessThanOrEqual(2);
    expect(standIn.calls.filter((call) => call === 'GetAuthorizationToken'), 'one renewal shared by both blobs').toHaveLength(2);
    expect(await inspectDigest(`${backend.host}/mirror/app:1`)).toBe(sourceDigest);
  });

  test('resends a request after an expired token', async () => {
    const ecr = provider({ host: proxy.host });
    const clients = clientsFor(ecr);
    await ecr.ensureRepository('mirror/resend');
    await ecr.credentials();
    expiredOn = (_method, token) => token === standIn.tokens[0];

    const head = await clients.get(proxy.host).headManifest('mirror/resend', 'missing');

    expect(head).toBeUndefined();
    expect(proxy.log.map((entry) => entry.status).slice(0, 2)).toEqual([403, 404]);
    expect(requests.map((request) => request.token).slice(0, 2)).toEqual([standIn.tokens[0], standIn.tokens[1]]);
  });

  test('creates a repository a push finds missing', async () => {
    const ecr = provider({ host: proxy.host });
    const clients = clientsFor(ecr);
    let checksAfterCreation = 0;
    // A new repository stays invisible to the registry for one more request, as ECR's may.
    visible = (repository) => standIn.repositories.has(repository) && ++checksAfterCreation > 1;

    const start = await clients.get(proxy.host).startUpload('mirror/late');

    expect(start.mounted).toBe(false);
    expect(standIn.calls).toEqual(['GetAuthorizationToken', 'CreateRepository', 'PutLifecyclePolicy']);
    expect(proxy.log.map((entry) => `${entry.method} ${entry.status}`)).toEqual(['POST 404', 'POST 404', 'POST 202']);
  });
});

describe('EcrProvider deletion', () => {
  function image(digest: string, tags: string[], children: string[] = []) {
    const manifest = children.length ? JSON.stringify({ schemaVersion: 2, mediaType: INDEX_TYPE, manifests: children.map((child) => ({ digest: child, mediaType: MANIFEST_TYPE, size: 1 })) }) : '{}';
    return { digest, tags, mediaType: children.length ? INDEX_TYPE : MANIFEST_TYPE, manifest };
  }

  test('deletes a tag with its digest', async () => {
    standIn.repositories.set('mirror/app', { tags: [], images: [image(DIGEST_A, ['1'])] });

    const result = await provider().deleteImage('mirror/app', { tag: '1', digest: DIGEST_A });

    expect(result).toBe('deleted');
    expect(standIn.bodies[0]!.imageIds).toEqual([{ imageTag: '1', imageDigest: DIGEST_A }]);
    expect(standIn.repositories.get('mirror/app')!.images).toEqual([]);
  });

  test('counts a missing image as absent', async () => {
    standIn.repositories.set('mirror/app', { tags: [], images: [] });

    expect(await provider().deleteImage('mirror/app', { digest: DIGEST_A })).toBe('absent');
    expect(await provider().deleteImage('mirror/gone', { digest: DIGEST_A })).toBe('absent');
  });

  test('keeps a tag that moved', async () => {
    standIn.repositories.set('mirror/app', { tags: [], images: [image(DIGEST_B, ['1'])] });

    const result = await provider().deleteImage('mirror/app', { tag: '1', digest: DIGEST_A });

    expect(result).toBe('absent');
    expect(standIn.repositories.get('mirror/app')!.images.map((entry) => entry.digest)).toEqual([DIGEST_B]);
  });

  test('deletes an untagged index first', async () => {
    standIn.repositories.set('mirror/app', { tags: [], images: [image(DIGEST_A, []), image(DIGEST_B, [], [DIGEST_A])] });

    const result = await provider().deleteImage('mirror/app', { digest: DIGEST_A });

    expect(result).toBe('deleted');
    expect(standIn.calls).toEqual(['BatchDeleteImage', 'DescribeImages', 'BatchGetImage', 'BatchDeleteImage', 'BatchDeleteImage']);
    expect(standIn.repositories.get('mirror/app')!.images).toEqual([]);
  });

  test('refuses while a tagged index lists it', async () => {
    standIn.repositories.set('mirror/app', { tags: [], images: [image(DIGEST_A, []), image(DIGEST_B, ['latest'], [DIGEST_A])] });

    const failure = await provider().deleteImage('mirror/app', { digest: DIGEST_A }).catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(RegistryError);
    expect((failure as RegistryError).message).toContain('tagged latest');
    expect(standIn.repositories.get('mirror/app')!.images).toHaveLength(2);
  });

  test('checks layers in batches of 100', async () => {
    standIn.repositories.set('mirror/app', { tags: [], images: [] });
    const digests = Array.from({ length: 150 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
    standIn.availableLayers = new Set([digests[3]!, digests[120]!]);

    const available = await provider().availableLayers('mirror/app', digests);

    expect([...available].sort()).toEqual([digests[3], digests[120]].sort());
    expect(standIn.calls).toEqual(['BatchCheckLayerAvailability', 'BatchCheckLayerAvailability']);
  });
});
