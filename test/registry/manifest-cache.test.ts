import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sha256, type Manifest, type RegistryClient } from '../../src/registry/client.ts';
import { copyImage } from '../../src/registry/copy.ts';
import { ManifestCache } from '../../src/registry/manifest-cache.ts';
import { OCI_MANIFEST } from '../../src/registry/media-types.ts';
import { DIGESTS, seedLayout } from '../harness/fixtures.ts';
import type { TestRegistry } from '../harness/registry.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { startRegistryPair, type RegistryPair } from './helpers.ts';

let pair: RegistryPair;
let source: TestRegistry;
let target: TestRegistry;
let sourceClient: RegistryClient;
let targetClient: RegistryClient;

beforeAll(async () => {
  pair = await startRegistryPair();
  ({ source, target, sourceClient, targetClient } = pair);
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', 'amd64');
  await seedLayout(source.host, 'hello-world-manifest-list', 'library/hello-world', 'list');
});

afterAll(() => pair?.stop());

/** Returns a manifest of `size` bytes (about), with its digest. */
function manifestOf(size: number): Manifest {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, padding: 'x'.repeat(size) }));
  return { bytes, mediaType: OCI_MANIFEST, digest: sha256(bytes) };
}

/** Returns a read function that counts its calls and resolves to `results` in turn. */
function countingRead(...results: Array<Manifest | undefined | Error>) {
  const read = async () => {
    const result = results[Math.min(read.calls, results.length - 1)];
    read.calls += 1;
    if (result instanceof Error) throw result;
    return result;
  };
  read.calls = 0;
  return read;
}

describe('manifest cache', () => {
  test('copies at once share source manifest GETs', async () => {
    const cache = new ManifestCache();
    const repositories = ['shared/a', 'shared/b', 'shared/c', 'shared/d'];
    await source.clearLog();

    const results = await Promise.all(
      repositories.map((repository) =>
        copyImage({ client: sourceClient, repository: 'library/hello-world', digest: DIGESTS.helloWorldList }, { client: targetClient, repository, tag: 'list' }, { manifestCache: cache }),
      ),
    );

    const manifestGets = (await source.requests()).filter((entry) => entry.method === 'GET' && entry.path.includes('/manifests/'));
    const index = JSON.parse((await inspectRaw(`${source.host}/library/hello-world:list`)).toString('utf8')) as { manifests: unknown[] };
    expect(manifestGets, 'one GET for the index and one for each child').toHaveLength(1 + index.manifests.length);
    const sourceBytes = await inspectRaw(`${source.host}/library/hello-world:list`);
    for (const repository of repositories) expect((await inspectRaw(`${target.host}/${repository}:list`)).equals(sourceBytes), repository).toBe(true);
    expect(results.map((result) => result.targetDigest)).toEqual(repositories.map(() => DIGESTS.helloWorldList));
  });

  test('a later copy reuses a kept manifest', async () => {
    const cache = new ManifestCache();
    await copyImage({ client: sourceClient, repository: 'library/busybox', digest: DIGESTS.busyboxAmd64 }, { client: targetClient, repository: 'kept/first', tag: 'amd64' }, { manifestCache: cache });
    await source.clearLog();

    const second = await copyImage(
      { client: sourceClient, repository: 'library/busybox', digest: DIGESTS.busyboxAmd64 },
      { client: targetClient, repository: 'kept/second', tag: 'amd64' },
      { manifestCache: cache },
    );

    const manifestGets = (await source.requests()).filter((entry) => entry.method === 'GET' && entry.path.includes('/manifests/'));
    expect(manifestGets).toEqual([]);
    const image = JSON.parse((await inspectRaw(`${source.host}/library/busybox:amd64`)).toString('utf8')) as { config: { size: number }; layers: Array<{ size: number }> };
    const blobBytes = image.config.size + image.layers.reduce((sum, layer) => sum + layer.size, 0);
    expect(second.bytes.pulled, 'only blob bytes are counted as pulled').toBe(blobBytes);
    expect((await inspectRaw(`${target.host}/kept/second:amd64`)).equals(await inspectRaw(`${source.host}/library/busybox:amd64`))).toBe(true);
  });

  test('a missing manifest is read again', async () => {
    const cache = new ManifestCache();
    const manifest = manifestOf(10);
    const read = countingRead(undefined, manifest);

    expect(await cache.read('r', 'app', manifest.digest, read)).toBeUndefined();
    expect(await cache.read('r', 'app', manifest.digest, read)).toBe(manifest);
    expect(await cache.read('r', 'app', manifest.digest, read)).toBe(manifest);

    expect(read.calls).toBe(2);
  });

  test('a failed read is read again', async () => {
    const cache = new ManifestCache();
    const manifest = manifestOf(10);
    const read = countingRead(new Error('connection reset'), manifest);

    await expect(cache.read('r', 'app', manifest.digest, read)).rejects.toThrow('connection reset');
    expect(await cache.read('r', 'app', manifest.digest, read)).toBe(manifest);

    expect(read.calls).toBe(2);
  });

  test('entries expire after the max age', async () => {
    let now = 1_000;
    const cache = new ManifestCache({ maxAgeMs: 100, now: () => now });
    const manifest = manifestOf(10);
    const read = countingRead(manifest);

    await cache.read('r', 'app', manifest.digest, read);
    now += 100;
    await cache.read('r', 'app', manifest.digest, read);
    expect(read.calls, 'kept at the max age').toBe(1);
    now += 1;
    await cache.read('r', 'app', manifest.digest, read);
    expect(read.calls, 'read again after it').toBe(2);
  });

  test('oldest entries go beyond max bytes', async () => {
    const first = manifestOf(600);
    const second = manifestOf(601);
    const cache = new ManifestCache({ maxBytes: 1000 });
    const readFirst = countingRead(first);
    const readSecond = countingRead(second);

    await cache.read('r', 'app', first.digest, readFirst);
    await cache.read('r', 'app', second.digest, readSecond);
    await cache.read('r', 'app', second.digest, readSecond);
    await cache.read('r', 'app', first.digest, readFirst);

    expect(readSecond.calls, 'the newer manifest stayed').toBe(1);
    expect(readFirst.calls, 'the older one was read again').toBe(2);
  });

  test('entries are per registry and repository', async () => {
    const cache = new ManifestCache();
    const manifest = manifestOf(10);
    const read = countingRead(manifest);

    await cache.read('r', 'app', manifest.digest, read);
    await cache.read('r', 'other', manifest.digest, read);
    await cache.read('s', 'app', manifest.digest, read);

    expect(read.calls).toBe(3);
  });
});
