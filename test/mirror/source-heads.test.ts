import { afterAll, beforeAll, beforeEach, expect, test } from 'vitest';
import { HttpTransport } from '../../src/registry/http.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { RegistryClient } from '../../src/registry/client.ts';
import { SourceHeads } from '../../src/mirror/source-heads.ts';
import { pushRandomImage } from '../harness/fixtures.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';

/**
 * Jobs of one process share a source tag's HEAD only when it was sent at or after their request time
 * and not longer ago than the maximum age. The registry's access log counts the HEADs that were sent.
 */

let source: TestRegistry;
let transport: HttpTransport;
let client: RegistryClient;
let firstDigest: string;

beforeAll(async () => {
  source = await startRegistry();
  firstDigest = await pushRandomImage(source.url, 'library/app', 'v1', [512]);
  transport = new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']) });
  client = new RegistryClient({ registry: source.host, insecure: true, transport });
});

afterAll(async () => {
  await transport?.close();
  await source?.stop();
});

beforeEach(async () => {
  await source.clearLog();
});

async function manifestHeads(): Promise<number> {
  return (await source.requests()).filter((entry) => entry.method === 'HEAD' && entry.path.includes('/manifests/')).length;
}

test('earlier requests share a HEAD', async () => {
  const heads = new SourceHeads();
  const requestedAt = Date.now() - 1_000;

  const responses = await Promise.all(Array.from({ length: 5 }, () => heads.resolve(client, 'library/app', 'v1', requestedAt)));
  const later = await heads.resolve(client, 'library/app', 'v1', requestedAt);

  expect(new Set([...responses, later].map((response) => response.digest))).toEqual(new Set([firstDigest]));
  expect(await manifestHeads()).toBe(1);
});

test('later request gets moved digest', async () => {
  let now = 1_000_000;
  const heads = new SourceHeads({ now: () => now });
  await pushRandomImage(source.url, 'library/moving', 'v1', [512]);
  const before = await heads.resolve(client, 'library/moving', 'v1', now);

  const moved = await pushRandomImage(source.url, 'library/moving', 'v1', [700]);
  now += 10;
  const after = await heads.resolve(client, 'library/moving', 'v1', now);

  expect(before.digest).not.toBe(moved);
  expect(after.digest).toBe(moved);
  expect(await manifestHeads()).toBe(2);
});

test('expired response is not shared', async () => {
  let now = 5_000_000;
  const heads = new SourceHeads({ maxAgeMs: 5_000, now: () => now });
  const requestedAt = now;
  await heads.resolve(client, 'library/app', 'v1', requestedAt);

  now += 5_000;
  await heads.resolve(client, 'library/app', 'v1', requestedAt);
  expect(await manifestHeads(), 'a response exactly as old as the maximum age is shared').toBe(1);

  now += 1;
  await heads.resolve(client, 'library/app', 'v1', requestedAt);
  expect(await manifestHeads()).toBe(2);
});

test('no request time sends HEAD', async () => {
  const heads = new SourceHeads();

  await heads.resolve(client, 'library/app', 'v1');
  await heads.resolve(client, 'library/app', 'v1');

  expect(await manifestHeads()).toBe(2);
});

test('missing tag is not cached', async () => {
  const heads = new SourceHeads();
  const requestedAt = Date.now() - 1_000;

  await expect(heads.resolve(client, 'library/late', 'v1', requestedAt)).rejects.toMatchObject({ code: 'REGISTRY_NOT_FOUND' });
  await expect(heads.resolve(client, 'library/late', 'v1', requestedAt)).rejects.toThrow(`source image ${source.host}/library/late:v1 does not exist`);
  const pushed = await pushRandomImage(source.url, 'library/late', 'v1', [512]);
  const found = await heads.resolve(client, 'library/late', 'v1', requestedAt);

  expect(found.digest).toBe(pushed);
  expect(await manifestHeads()).toBe(3);
});

test('other repositories resolved separately', async () => {
  const heads = new SourceHeads();
  const requestedAt = Date.now() - 1_000;
  await pushRandomImage(source.url, 'library/other', 'v1', [512]);

  const [app, other] = await Promise.all([heads.resolve(client, 'library/app', 'v1', requestedAt), heads.resolve(client, 'library/other', 'v1', requestedAt)]);

  expect(app.digest).toBe(firstDigest);
  expect(other.digest).not.toBe(firstDigest);
  expect(await manifestHeads()).toBe(2);
});
