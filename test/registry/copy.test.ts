import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpTransport } from '../../src/registry/http.ts';
import { NetworkPolicy } from '../../src/net/policy.ts';
import { RegistryClient, sha256 } from '../../src/registry/client.ts';
import { copyImage, type CopyResult } from '../../src/registry/copy.ts';
import { MissingChildError } from '../../src/errors.ts';
import { startRegistry, type TestRegistry } from '../harness/registry.ts';
import { inspectRaw } from '../harness/skopeo.ts';
import { DIGESTS, pushLayoutOverHttp, seedDockerArchive, seedLayout } from '../harness/fixtures.ts';

let source: TestRegistry;
let target: TestRegistry;
let transport: HttpTransport;
let sourceClient: RegistryClient;
let targetClient: RegistryClient;

/** Fixture images seeded into the source registry: repository and tag. */
const IMAGES = [
  { name: 'hello-world 9-platform Docker manifest list', repository: 'library/hello-world', tag: 'list' },
  { name: 'hello-world list with cosign signature tags', repository: 'signed/hello-world', tag: 'list' },
  { name: 'hello-world arm64 Docker v2 manifest', repository: 'library/hello-world', tag: 'arm64' },
  { name: 'busybox amd64 OCI manifest', repository: 'library/busybox', tag: 'amd64' },
  { name: 'busybox arm64 OCI manifest', repository: 'library/busybox', tag: 'arm64' },
  { name: 'alpine 3.10 from a docker-archive', repository: 'library/alpine', tag: '3.10' },
] as const;

beforeAll(async () => {
  [source, target] = await Promise.all([startRegistry(), startRegistry()]);
  await seedLayout(source.host, 'hello-world-manifest-list', 'library/hello-world', 'list');
  await seedLayout(source.host, 'hello-world-arm64-docker-v2', 'library/hello-world', 'arm64');
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-amd64', 'library/busybox', 'amd64');
  await seedLayout(source.host, 'busybox-1.38.0-uclibc-arm64v8', 'library/busybox', 'arm64');
  await seedDockerArchive(source.host, 'alpine-3.10-docker-archive/alpine-310.tar', 'library/alpine', '3.10');
  await pushLayoutOverHttp(source.url, 'signed/hello-world', 'hello-world-manifest-list-cosign', 'list');
  transport = new HttpTransport({ policy: new NetworkPolicy(['127.0.0.0/8']) });
  sourceClient = new RegistryClient({ registry: source.host, insecure: true, transport });
  targetClient = new RegistryClient({ registry: target.host, insecure: true, transport });
});

afterAll(async () => {
  await transport?.close();
  await Promise.all([source?.stop(), target?.stop()]);
});

function copy(repository: string, tag: string, targetRepository: string, options: Parameters<typeof copyImage>[2] = {}): Promise<CopyResult> {
  return copyImage(
    { client: sourceClient, repository, tag },
    { client: targetClient, repository: targetRepository, tag },
    options,
  );
}

describe('copyImage', () => {
  test.each(IMAGES)('copies $name with its digest preserved', async ({ repository, tag }) => {
    const result = await copy(repository, tag, `mirror/${repository}-${tag}`);

    const sourceBytes = await inspectRaw(`${source.host}/${repository}:${tag}`);
    const targetBytes = await inspectRaw(`${target.host}/mirror/${repository}-${tag}:${tag}`);
    expect(targetBytes.equals(sourceBytes), 'skopeo reads the same manifest bytes on both sides').toBe(true);
    expect(result.sourceDigest).toBe(sha256(sourceBytes));
    expect(result.targetDigest).toBe(result.sourceDigest);
    expect(result.digestChanged).toBe(false);
    expect(result.manifests.copied).toBeGreaterThan(0);
    expect(result.blobs.copied).toBeGreaterThan(0);
  });

  test.each(IMAGES)('second copy of $name moves no blob and pushes no manifest', async ({ repository, tag }) => {
    await copy(repository, tag, `again/${repository}`);
    await target.clearLog();

    const result = await copy(repository, tag, `again/${repository}`);

    expect(result.manifests.copied).toBe(0);
    expect(result.blobs.copied).toBe(0);
    expect(result.blobs.mounted).toBe(0);
    expect(result.bytes.pushed).toBe(0);
    const writes = (await target.requests()).filter((entry) => entry.method !== 'GET' && entry.method !== 'HEAD');
    expect(writes, 'no write request reaches the target').toEqual([]);
  });

  test('copies the 9 platforms of the hello-world list', async () => {
    const result = await copy('library/hello-world', 'list', 'platforms/hello-world');

    expect(result.sourceDigest).toBe(DIGESTS.helloWorldList);
    expect(result.platforms).toHaveLength(9);
    expect(result.platforms).toContain('linux/arm64/v8');
    expect(result.platforms).toContain('linux/s390x');
    expect(result.manifests.copied).toBe(10);
    expect(result.blobs.copied).toBe(18);
  });

  test('pushes each manifest with its own media type', async () => {
    await copy('library/busybox', 'amd64', 'types/busybox');
    await copy('library/hello-world', 'list', 'types/hello-world');

    const oci = await fetch(`${target.url}/v2/types/busybox/manifests/amd64`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect(oci.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
    const list = await fetch(`${target.url}/v2/types/hello-world/manifests/list`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.list.v2+json' },
    });
    expect(list.headers.get('content-type')).toBe('application/vnd.docker.distribution.manifest.list.v2+json');
  });

  test('mounts every blob from a repository named as holding it', async () => {
    const first = await copy('library/hello-world', 'list', 'mount/first');
    await target.clearLog();

    const second = await copy('library/hello-world', 'list', 'mount/second', { mountSources: () => ['mount/first'] });

    expect(second.blobs.mounted).toBe(first.blobs.copied);
    expect(second.blobs.copied).toBe(0);
    const blobUploads = (await target.requests()).filter((entry) => entry.method === 'PATCH' || (entry.method === 'PUT' && entry.path.includes('/blobs/')));
    expect(blobUploads, 'no blob bytes are uploaded').toEqual([]);
    const sourceBytes = await inspectRaw(`${source.host}/library/hello-world:list`);
    expect((await inspectRaw(`${target.host}/mount/second:list`)).equals(sourceBytes)).toBe(true);
  });

  test('mounts a known blob without the gate', async () => {
    const first = await copy('library/busybox', 'amd64', 'gate/first');
    const gated: string[] = [];

    const second = await copy('library/busybox', 'amd64', 'gate/second', {
      mountSources: () => ['gate/first'],
      blobGate: async (digest) => {
        gated.push(digest);
        throw new Error(`the gate was entered for ${digest}`);
      },
    });

    expect(gated, 'no blob waits for the gate').toEqual([]);
    expect(second.blobs.mounted).toBe(first.blobs.copied);
    expect(second.blobs.copied).toBe(0);
  });

  test('waiting gate ends once a location is recorded', async () => {
    const first = await copy('library/busybox', 'arm64', 'gate/holder');
    let known: string[] = [];
    let waits = 0;
    const stored: string[] = [];

    const second = await copy('library/busybox', 'arm64', 'gate/waiter', {
      mountSources: () => known,
      onBlobStored: (digest, repository) => {
        stored.push(`${repository}@${digest}`);
      },
      // Another worker holds every blob's lock and records the location after a few tries.
      blobGate: async (_digest, _work, stopWaiting) => {
        for (;;) {
          waits += 1;
          if (waits === 3) known = ['gate/holder'];
          if (await stopWaiting!()) return false;
        }
      },
    });

    expect(second.blobs.copied).toBe(0);
    expect(second.blobs.mounted).toBe(first.blobs.copied);
    expect(stored, 'each mounted blob is recorded as stored').toHaveLength(first.blobs.copied);
    expect((await inspectRaw(`${target.host}/gate/waiter:arm64`)).equals(await inspectRaw(`${source.host}/library/busybox:arm64`))).toBe(true);
  });

  test('new tag mounts before lookup', async () => {
    const first = await copy('library/busybox', 'amd64', 'order/first');
    await target.clearLog();

    const second = await copy('library/busybox', 'amd64', 'order/new', { mountSources: () => ['order/first'] });

    expect(second.blobs.mounted).toBe(first.blobs.copied);
    const blobHeads = (await target.requests()).filter((entry) => entry.method === 'HEAD' && entry.path.includes('/blobs/'));
    expect(blobHeads, 'no blob HEAD before the mounts').toEqual([]);
  });

  test('existing tag looks up first', async () => {
    await copy('library/busybox', 'amd64', 'order/base');
    // The repository has the image's blobs under one tag, and another tag that points at another image.
    await copy('library/busybox', 'amd64', 'order/update');
    await copyImage({ client: sourceClient, repository: 'library/hello-world', tag: 'arm64' }, { client: targetClient, repository: 'order/update', tag: 'current' });
    await target.clearLog();

    const updated = await copyImage(
      { client: sourceClient, repository: 'library/busybox', tag: 'amd64' },
      { client: targetClient, repository: 'order/update', tag: 'current' },
      { mountSources: () => ['order/base'] },
    );

    expect(updated.previousTargetDigest).toBeDefined();
    expect(updated.blobs.present).toBe(2);
    expect(updated.blobs.mounted).toBe(0);
    const mounts = (await target.requests()).filter((entry) => entry.method === 'POST' && entry.path.includes('/blobs/uploads/'));
    expect(mounts, 'no mount of a blob the repository has').toEqual([]);
  });

  test('new tag looks up own recorded blobs', async () => {
    await copy('library/busybox', 'amd64', 'order/elsewhere');
    await copy('library/busybox', 'amd64', 'order/recorded');
    await target.clearLog();

    const result = await copyImage(
      { client: sourceClient, repository: 'library/busybox', tag: 'amd64' },
      { client: targetClient, repository: 'order/recorded', tag: 'second' },
      { mountSources: () => ['order/elsewhere', 'order/recorded'] },
    );

    expect(result.previousTargetDigest, 'the tag is new').toBeUndefined();
    expect(result.blobs.present).toBe(2);
    const mounts = (await target.requests()).filter((entry) => entry.method === 'POST' && entry.path.includes('/blobs/uploads/'));
    expect(mounts, 'no mount rewrites a link the repository has').toEqual([]);
  });

  test('blob lost before PUT is placed again', async () => {
    const config = (await sourceClient.getManifest('library/busybox', 'arm64'))!;
    const configDigest = (JSON.parse(config.bytes.toString('utf8')) as { config: { digest: string } }).config.digest;
    let deleted = false;
    await target.clearLog();

    // The first time the config blob is in place, it is deleted from the repository again.
    const result = await copy('library/busybox', 'arm64', 'lost/config', {
      onBlobStored: async (digest, repository) => {
        if (digest !== configDigest || deleted) return;
        deleted = true;
        const response = await fetch(`${target.url}/v2/${repository}/blobs/${digest}`, { method: 'DELETE' });
        expect(response.status).toBe(202);
      },
    });

    expect(deleted).toBe(true);
    expect(result.blobs.copied, 'the config blob went up twice').toBe(3);
    const manifestPuts = (await target.requests()).filter((entry) => entry.method === 'PUT' && entry.path.includes('/manifests/'));
    expect(manifestPuts.map((entry) => entry.status)).toEqual([400, 201]);
    expect((await inspectRaw(`${target.host}/lost/config:arm64`)).equals(await inspectRaw(`${source.host}/library/busybox:arm64`))).toBe(true);
  });

  test('parallel new tags in one repository land', async () => {
    await copy('library/busybox', 'amd64', 'race/source');
    const tags = Array.from({ length: 40 }, (_, index) => `t${index}`);

    // Each copy mounts every blob into race/shared, rewriting links that the other copies' PUTs read.
    // The copies start a millisecond apart, so that one's mounts meet another's PUT.
    const results = await Promise.allSettled(
      tags.map(async (tag, index) => {
        await sleep(index);
        return copyImage(
          { client: sourceClient, repository: 'library/busybox', tag: 'amd64' },
          { client: targetClient, repository: 'race/shared', tag },
          { mountSources: () => ['race/source'] },
        );
      }),
    );

    const failures = results.flatMap((result) => (result.status === 'rejected' ? [String(result.reason)] : []));
    expect(failures).toEqual([]);
    const sourceBytes = await inspectRaw(`${source.host}/library/busybox:amd64`);
    for (const tag of tags) expect((await inspectRaw(`${target.host}/race/shared:${tag}`)).equals(sourceBytes), tag).toBe(true);
  });

  test('reads source by resolved digest', async () => {
    await source.clearLog();

    const result = await copy('library/busybox', 'amd64', 'resolved/digest', { resolvedTagDigest: DIGESTS.busyboxAmd64 });

    expect(result.sourceDigest).toBe(DIGESTS.busyboxAmd64);
    const manifestReads = (await source.requests()).filter((entry) => entry.path.includes('/manifests/'));
    expect(manifestReads.map((entry) => `${entry.method} ${entry.path}`)).toEqual([`GET /v2/library/busybox/manifests/${DIGESTS.busyboxAmd64}`]);
  });

  test('resolved digest gone: reads the tag', async () => {
    const missingDigest = `sha256:${'0'.repeat(64)}`;

    const result = await copy('library/busybox', 'amd64', 'resolved/gone', { resolvedTagDigest: missingDigest });

    expect(result.sourceDigest).toBe(DIGESTS.busyboxAmd64);
    expect((await inspectRaw(`${target.host}/resolved/gone:amd64`)).equals(await inspectRaw(`${source.host}/library/busybox:amd64`))).toBe(true);
  });

  test('reuses caller target tag HEAD', async () => {
    await target.clearLog();

    const result = await copy('library/busybox', 'arm64', 'head/reused', { targetTagHead: { head: undefined } });

    expect(result.manifests.copied).toBe(1);
    const manifestHeads = (await target.requests()).filter((entry) => entry.method === 'HEAD' && entry.path.includes('/manifests/'));
    expect(manifestHeads, 'the copy sends no HEAD of its own for the target tag').toEqual([]);
  });

  test('uploads normally when the named mount source lacks the blob', async () => {
    const result = await copy('library/busybox', 'amd64', 'mount/fallback', { mountSources: () => ['no/such-repository'] });

    expect(result.blobs.mounted).toBe(0);
    expect(result.blobs.copied).toBe(2);
    expect((await inspectRaw(`${target.host}/mount/fallback:amd64`)).equals(await inspectRaw(`${source.host}/library/busybox:amd64`))).toBe(true);
  });

  test('uploads a blob above the threshold in PATCH chunks', async () => {
    await target.clearLog();

    const result = await copy('library/busybox', 'arm64', 'chunked/busybox', { monolithicMaxBytes: 64 * 1024, chunkBytes: 100_000 });

    const patches = (await target.requests()).filter((entry) => entry.method === 'PATCH');
    // The 829,613-byte layer needs 9 chunks of 100,000 bytes; the config goes in one PUT.
    expect(patches).toHaveLength(9);
    expect(result.blobs.copied).toBe(2);
    expect((await inspectRaw(`${target.host}/chunked/busybox:arm64`)).equals(await inspectRaw(`${source.host}/library/busybox:arm64`))).toBe(true);
  });

  test('platform filter writes a new index of the matching children', async () => {
    const result = await copy('library/hello-world', 'list', 'filtered/hello-world', {
      platforms: [{ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'amd64' }],
    });

    expect(result.digestChanged).toBe(true);
    expect(result.targetDigest).not.toBe(result.sourceDigest);
    expect(result.platforms.sort()).toEqual(['linux/amd64', 'linux/arm64/v8']);
    const index = JSON.parse((await inspectRaw(`${target.host}/filtered/hello-world:list`)).toString('utf8')) as { manifests: unknown[] };
    expect(index.manifests).toHaveLength(2);
    expect(sha256(await inspectRaw(`${target.host}/filtered/hello-world:list`))).toBe(result.targetDigest);
  });

  test('missing child fails the copy and tags nothing', async () => {
    // Push the list into its own source repository, then delete one child manifest behind its back.
    await copyImage(
      { client: sourceClient, repository: 'library/hello-world', tag: 'list' },
      { client: sourceClient, repository: 'broken/hello-world', tag: 'list' },
    );
    const list = JSON.parse((await inspectRaw(`${source.host}/broken/hello-world:list`)).toString('utf8')) as { manifests: Array<{ digest: string }> };
    const removed = list.manifests[3]!.digest;
    const deletion = await fetch(`${source.url}/v2/broken/hello-world/manifests/${removed}`, { method: 'DELETE' });
    expect(deletion.status).toBe(202);

    const failure = copy('broken/hello-world', 'list', 'broken/target');

    await expect(failure).rejects.toBeInstanceOf(MissingChildError);
    await expect(failure).rejects.toThrow(removed);
    const tagged = await fetch(`${target.url}/v2/broken/target/manifests/list`, { method: 'HEAD' });
    expect(tagged.status, 'the target tag does not exist').toBe(404);
  });
});
