import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { MirrorRequest } from '../../queues/mirror.ts';
import { configFileSchema, type Config } from '../../src/config/config.ts';
import { RegistryClients } from '../../src/mirror/clients.ts';
import { mirrorImage } from '../../src/mirror/mirror-image.ts';
import { OAUTH_USERNAME } from '../../src/providers/google-tokens.ts';
import type { HttpTransport } from '../../src/registry/http.ts';
import { installLoopbackGuard, type LoopbackGuard } from '../net/loopback-guard.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { startRedis, type TestRedis } from '../harness/redis.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectDigest } from '../harness/skopeo.ts';
import { startArStandIn, TEST_LOCATION, TEST_PROJECT, TEST_REPOSITORY, type ArStandIn } from './artifact-registry-standin.ts';
import { startEcrStandIn, TEST_ACCESS_KEY, TEST_ACCOUNT, TEST_SECRET_KEY, type EcrStandIn } from './ecr-standin.ts';
import { startRegistryProxy, type RegistryProxy } from './registry-proxy.ts';
import { startScalewayStandIn, TEST_PROJECT_ID, TEST_REGION, TEST_SECRET_KEY as SCW_SECRET_KEY, type ScalewayStandIn } from './scaleway-standin.ts';
import { loopbackTransport } from './setup.ts';

/**
 * A mirror job end to end with each cloud provider, configured as a user would (the ECR provider takes
 * its AWS credentials from the SDK's default chain, here the environment), against the local stand-ins.
 * The bytes land in a real distribution registry behind each stand-in's registry proxy, where skopeo
 * reads them back.
 */

const SCW_KEY_VARIABLE = 'MIRRORFLEET_TEST_SCW_SECRET_KEY';

let guard: LoopbackGuard;
let redis: TestRedis;
let connection: Redis;
let source: TestRegistry;
let backend: TestRegistry;
let ecr: EcrStandIn;
let ar: ArStandIn;
let scw: ScalewayStandIn;
let proxies: { ecr: RegistryProxy; ar: RegistryProxy; scw: RegistryProxy };
let transport: HttpTransport;
let config: Config;
let clients: RegistryClients;
let keyDirectory: string;
let sourceDigest: string;

beforeAll(async () => {
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: TEST_ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY: TEST_SECRET_KEY,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: '/nonexistent/aws-config',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
    [SCW_KEY_VARIABLE]: SCW_SECRET_KEY,
  });
  [redis, source, backend, ecr, ar, scw] = await Promise.all([startRedis(), startRegistry(), startRegistry(), startEcrStandIn(), startArStandIn(), startScalewayStandIn()]);
  guard = installLoopbackGuard();
  proxies = {
    ecr: await startRegistryProxy({
      backend: backend.url,
      auth: 'basic',
      checkCredentials: (username, password) => (username === 'AWS' && ecr.tokens.includes(password) ? 'valid' : 'invalid'),
      repositoryExists: (repository) => ecr.repositories.has(repository),
    }),
    ar: await startRegistryProxy({
      backend: backend.url,
      auth: 'bearer',
      checkCredentials: (username, password) => (username === OAUTH_USERNAME && ar.accessTokens.includes(password) ? 'valid' : 'invalid'),
      repositoryExists: () => ar.repository !== undefined,
    }),
    scw: await startRegistryProxy({
      backend: backend.url,
      auth: 'bearer',
      checkCredentials: (username, password) => (username === 'nologin' && password === SCW_SECRET_KEY ? 'valid' : 'invalid'),
      repositoryExists: (repository) => scw.namespaces.some((namespace) => namespace.name === repository.split('/')[0]),
    }),
  };
  keyDirectory = await mkdtemp(join(tmpdir(), 'mirrorfleet-gcp-key-'));
  await writeFile(join(keyDirectory, 'key.json'), JSON.stringify(ar.key));
  sourceDigest = await pushRandomImage(source.url, 'library/app', '1.0', [150_000, 20_000]);

  config = configFileSchema.parse({
    redis: { url: redis.url, keyPrefix: `test-${randomBytes(4).toString('hex')}` },
    mirrorRegistries: [
      { name: 'aws', provider: 'ecr', account: TEST_ACCOUNT, region: 'eu-west-1', host: proxies.ecr.host, apiEndpoint: ecr.origin, prefix: 'mirror' },
      {
        name: 'gcp',
        provider: 'artifact-registry',
        project: TEST_PROJECT,
        location: TEST_LOCATION,
        repository: TEST_REPOSITORY,
        host: proxies.ar.host,
        apiEndpoint: ar.origin,
        credentialsFile: join(keyDirectory, 'key.json'),
      },
      { name: 'scw', provider: 'scaleway', region: TEST_REGION, projectId: TEST_PROJECT_ID, secretKey: { env: SCW_KEY_VARIABLE }, host: proxies.scw.host, apiEndpoint: scw.origin },
    ],
    registries: [source.host, proxies.ecr.host, proxies.ar.host, proxies.scw.host].map((host) => ({ host, insecure: true })),
  });
  transport = loopbackTransport();
  clients = new RegistryClients(config, transport);
  connection = new Redis(redis.url, { maxRetriesPerRequest: null });
});

afterAll(async () => {
  connection?.disconnect();
  await transport?.close();
  guard?.restore();
  await Promise.all([proxies?.ecr.close(), proxies?.ar.close(), proxies?.scw.close(), ecr?.close(), ar?.close(), scw?.close()]);
  await Promise.all([redis?.stop(), source?.stop(), backend?.stop()]);
  if (keyDirectory) await rm(keyDirectory, { recursive: true, force: true });
});

function request(registry: string): MirrorRequest {
  return { v: 1, source: `${source.host}/library/app:1.0`, registry, mode: 'service', cluster: 'prod', service: 'api' };
}

async function mirror(registry: string) {
  return mirrorImage(request(registry), { config, redis: connection, clients }, { jobId: `${registry}-${randomBytes(3).toString('hex')}` });
}

/** Reads the digest of `target` (`proxy-host/repository:tag`) from the backing registry with skopeo. */
async function landedDigest(proxy: RegistryProxy, target: string): Promise<string> {
  return inspectDigest(`${backend.host}/${target.slice(proxy.host.length + 1)}`);
}

describe('mirror job with cloud providers', () => {
  test('ecr creates, pushes and skips', async () => {
    const first = await mirror('aws');
    const second = await mirror('aws');

    const repository = `mirror/prod/services/api/${source.host.replace(':', '_')}/library/app`;
    expect(first.action).toBe('copied');
    expect(first.target).toBe(`${proxies.ecr.host}/${repository}:1.0`);
    expect(await landedDigest(proxies.ecr, first.target)).toBe(sourceDigest);
    expect(second.action).toBe('skipped');
    expect(ecr.repositories.get(repository)?.lifecyclePolicyText).toContain('untagged');
    expect(ecr.unexpected).toEqual([]);
  });

  test('artifact registry creates, pushes and skips', async () => {
    const first = await mirror('gcp');
    const second = await mirror('gcp');

    expect(first.action).toBe('copied');
    expect(first.target).toBe(`${proxies.ar.host}/${TEST_PROJECT}/${TEST_REPOSITORY}/prod/services/api/${source.host.replace(':', '_')}/library/app:1.0`);
    expect(await landedDigest(proxies.ar, first.target)).toBe(sourceDigest);
    expect(second.action).toBe('skipped');
    expect(ar.repository, 'the repository was created on demand').toBeDefined();
    expect(ar.unexpected).toEqual([]);
  });

  test('scaleway creates, pushes and skips', async () => {
    const first = await mirror('scw');
    const second = await mirror('scw');

    expect(first.action).toBe('copied');
    expect(first.target).toBe(`${proxies.scw.host}/prod-api/${source.host.replace(':', '_')}/library/app:1.0`);
    expect(await landedDigest(proxies.scw, first.target)).toBe(sourceDigest);
    expect(second.action).toBe('skipped');
    expect(scw.namespaces.map((namespace) => namespace.name)).toEqual(['prod-api']);
    expect(scw.unexpected).toEqual([]);
  });

  test('contacts nothing but loopback', () => {
    expect(guard.escapes).toEqual([]);
    expect(guard.lookups).toEqual([]);
  });
});
